{#- The registry (registry/mappings.py, rendered into macros/_registry.sql by
    `crmsync registry --write`) as the models read it. -#}

{#- The mappings, parents first. -#}
{% macro registry_mappings() %}
    {{ return(registry()['mappings']) }}
{% endmacro %}


{#- A per-mapping var (conflict_policy, delete_counterparts) for one mapping. `--vars` may name
    only some mappings (`{"conflict_policy": {"orders": "keap"}}`): the others keep the
    project's default. A key that names no mapping stops the build, naming it. -#}
{% macro mapping_var(name, mapping, default) %}
    {%- set given = var(name) -%}
    {%- if given is not mapping -%}
        {{ exceptions.raise_compiler_error(name ~ " must map mapping names to values, not " ~ given) }}
    {%- endif -%}
    {%- for key in given if key not in registry_mappings() -%}
        {{ exceptions.raise_compiler_error(name ~ "." ~ key ~ " names no mapping (the mappings: " ~ registry_mappings() | join(", ") ~ ")") }}
    {%- endfor -%}
    {{ return(given.get(mapping, default)) }}
{% endmacro %}


{#- One mapping's description (number, resources, natural key, parents, fields, Keap targets). -#}
{% macro registry_mapping(mapping) %}
    {%- set found = registry()['by_name'].get(mapping) -%}
    {%- if found is none -%}
        {{ exceptions.raise_compiler_error("no mapping '" ~ mapping ~ "' in registry/mappings.py") }}
    {%- endif -%}
    {{ return(found) }}
{% endmacro %}


{#- A mapping's property table: the merge iterates over it, and the docs and `crmsync
    dataflow` print the same registry. A macro of its own, so that unit tests can give a
    merge model a smaller table. -#}
{% macro mapping_fields(mapping) %}
    {{ return(registry_mapping(mapping)['fields']) }}
{% endmacro %}


{#- Where each field lives in the body of a Keap write (macros/keap_payloads.sql). -#}
{% macro registry_keap_targets(mapping) %}
    {{ return(registry_mapping(mapping)['keap_targets']) }}
{% endmacro %}


{#- What Keap requires of a create: groups, one property of each with a value. -#}
{% macro registry_create_requires(mapping) %}
    {{ return(registry_mapping(mapping)['keap_create_requires']) }}
{% endmacro %}


{#- One row per pair and mapped field (`paired`: rows of a paired model, with pair_key and pair_hash):
    the two values in canonical text, side by side, and on one row of each pair
    `is_first_of_pair` (the row an incremental build reads the pair's hash from).
    Derived fields (an order's Status, which follows its stage) are not merged on their own,
    and a field whose value does not parse on either side (`*_unparseable_fields`) is left
    out: nothing is written for it and its base stays, until the value is fixed. -#}
{% macro unpivot_fields(mapping, paired, fields) %}
    {%- set left_out = [] %}
    {%- for f in fields | rejectattr('direction', 'equalto', 'derived') %}
    {%- set unparseable -%}
        ({{ list_has('coalesce(keap_unparseable_fields, ' ~ empty_text_list() ~ ')', "'" ~ f.field ~ "'") }}
            or {{ list_has('coalesce(customcrm_unparseable_fields, ' ~ empty_text_list() ~ ')', "'" ~ f.field ~ "'") }})
    {%- endset %}
    select
        '{{ mapping }}' as mapping,
        keap_id,
        customcrm_id,
        pair_key,
        pair_hash,
        is_new_link,
        keap_updated_at,
        customcrm_updated_at,
        {{ loop.index }} as field_position,
        '{{ f.field }}' as field,
        '{{ f.keap_property | replace("'", "''") }}' as keap_property,
        '{{ f.customcrm_property | replace("'", "''") }}' as customcrm_property,
        '{{ f.customcrm_field }}' as customcrm_field,
        '{{ f.compare_as }}' as compare_as,
        '{{ f.direction }}' as direction,
        {{ canonical_text('keap_' ~ f.field, f.compare_as) }} as keap_value,
        {{ canonical_text('customcrm_' ~ f.field, f.compare_as) }} as customcrm_value,
        -- the pair's first row: every field before this one is left out (a case, which
        -- stops at the first field kept: most pairs leave none out)
        {% if left_out -%}
        case {% for earlier in left_out %}when not {{ earlier }} then false {% endfor %}else true end
        {%- else -%}
        true
        {%- endif %} as is_first_of_pair
    from {{ paired }}
    where not {{ unparseable }}
    {{ "union all" if not loop.last }}
    {%- do left_out.append(unparseable) %}
    {%- endfor %}
{% endmacro %}


{#- The three-way merge of docs/specification.md, per field, against the base (the value last
    written or confirmed by the sync):
    - equal on both sides: nothing to write;
    - changed on one side only: that side's value goes to the other;
    - changed on both to different values: a conflict; the policy decides
      (newest: the later update time wins, compared on one clock - each system's times less
      its server's measured clock offset - and a difference within the measurement's
      uncertainty is a tie, which goes to Keap; or always keap / always customcrm);
    - a new link has no base: a value beats an empty one; both have values: as a conflict.
    Fields flowing one way only (direction to_customcrm) always take Keap's value.
    `compared`: rows of unpivot_fields; adds base_value, has_base, keap_changed,
    customcrm_changed, customcrm_is_newer, is_clock_tie, winner, reason, is_conflict,
    merged_value. -#}
{% macro three_way_merge(mapping, compared) %}
    {%- set policy = mapping_var('conflict_policy', mapping, 'newest') -%}
    {%- if policy not in ('newest', 'keap', 'customcrm') -%}
        {{ exceptions.raise_compiler_error("conflict_policy." ~ mapping ~ " must be newest, keap or customcrm, not " ~ policy) }}
    {%- endif %}
    with_base as (
        select
            {{ compared }}.*,
            base_values.keap_id is not null as has_base,
            base_values.value as base_value
        from {{ compared }}
        left join {{ ref('stg_sync_state__base_values') }} as base_values
            on base_values.mapping = {{ compared }}.mapping
            and base_values.keap_id = {{ compared }}.keap_id
            and base_values.field = {{ compared }}.field
    ),

    -- the two systems' clocks, as last measured: update times are compared on one clock
    -- (each less its server's offset), and a difference within the measurement's
    -- uncertainty is a tie
    clocks as (
        select
            coalesce(max(offset_s) filter (where system = 'keap'), 0) as keap_offset_s,
            coalesce(max(offset_s) filter (where system = 'customcrm'), 0) as customcrm_offset_s,
            coalesce(sum(uncertainty_s), 0) as uncertainty_s
        from {{ ref('stg_sync_state__clock_offsets') }}
    ),

    {%- set customcrm_lead_s -%}
        ({{ epoch_seconds('with_base.customcrm_updated_at') }} - clocks.customcrm_offset_s
            - ({{ epoch_seconds('with_base.keap_updated_at') }} - clocks.keap_offset_s))
    {%- endset %}
    changes as (
        select
            with_base.*,
            has_base and keap_value is distinct from base_value as keap_changed,
            has_base and customcrm_value is distinct from base_value as customcrm_changed,
            -- equal values decide nothing: the times are compared only where the sides differ
            case when keap_value is distinct from customcrm_value
                then coalesce({{ customcrm_lead_s }} > clocks.uncertainty_s, false) end as customcrm_is_newer,
            case when keap_value is distinct from customcrm_value
                then coalesce(abs({{ customcrm_lead_s }}) <= clocks.uncertainty_s, false) end as is_clock_tie
        from with_base
        cross join clocks
    ),

    decided as (
        select
            *,
            case
                when keap_value is not distinct from customcrm_value then 'none'
                when direction = 'to_customcrm' then 'keap'
                when has_base and keap_changed and not customcrm_changed then 'keap'
                when has_base and customcrm_changed and not keap_changed then 'customcrm'
                when not has_base and customcrm_value is null then 'keap'
                when not has_base and keap_value is null then 'customcrm'
                {%- if policy == 'keap' %}
                else 'keap'
                {%- elif policy == 'customcrm' %}
                else 'customcrm'
                {%- else %}
                when customcrm_is_newer then 'customcrm'
                else 'keap'
                {%- endif %}
            end as winner,
            case
                when keap_value is not distinct from customcrm_value and has_base
                    and keap_value is distinct from base_value then 'changed_on_both_to_the_same_value'
                when keap_value is not distinct from customcrm_value then 'in_sync'
                when direction = 'to_customcrm' then 'keap_to_customcrm_only'
                when has_base and keap_changed and not customcrm_changed then 'changed_in_keap'
                when has_base and customcrm_changed and not keap_changed then 'changed_in_customcrm'
                when not has_base and customcrm_value is null then 'new_link_keap_value_beats_empty'
                when not has_base and keap_value is null then 'new_link_customcrm_value_beats_empty'
                {%- if policy != 'newest' %}
                else 'conflict_policy_{{ policy }}'
                {%- else %}
                when customcrm_is_newer then 'conflict_customcrm_newer'
                when is_clock_tie then 'conflict_tie_goes_to_keap'
                else 'conflict_keap_newer'
                {%- endif %}
            end as reason
        from changes
    ),

    merged as (
        select
            *,
            reason like 'conflict%' as is_conflict,
            case winner when 'customcrm' then customcrm_value else keap_value end as merged_value
        from decided
    )
{% endmacro %}


{#- The two sides of every mapped field of a paired model, `keap_<field>` and
    `customcrm_<field>`, in the registry's order: each staging model names a field's value
    after the field, so a plain field needs no SQL of its own here. `special`: field ->
    [Keap expression, Customcrm expression] for the fields that are not read as they are
    (a reference translated through its parent's links, a stage). -#}
{% macro paired_fields(mapping, special={}) %}
    {%- for f in registry_mapping(mapping)['fields'] %}
        {%- set sides = special.get(f.field, ['keap.' ~ f.field, 'customcrm.' ~ f.field]) %}
        {{ sides[0] }} as keap_{{ f.field }},
        {{ sides[1] }} as customcrm_{{ f.field }}{{ "," if not loop.last }}
    {%- endfor %}
{% endmacro %}


{#- The start of a paired model (int_<mapping>__paired): CTEs `matched` (linked and
    matched pairs, Keap records to be created - no Customcrm side yet, so the merge gives
    every Keap value, as a value beats an empty one - and with create_in_keap the Customcrm
    records to be created in Keap), `keap` and `customcrm` (both staging models). -#}
{% macro paired_sides(mapping) %}
    {%- set m = registry_mapping(mapping) %}
    matched as (
        select keap_id, customcrm_id, link_rule from {{ ref('int_' ~ mapping ~ '__matched') }}
        where link_rule <> 'ambiguous'
        {{ customcrm_only_pairs(mapping, 'stg_customcrm__' ~ m.customcrm_resource, 'customcrm_' ~ m.customcrm_singular ~ '_id') }}
    ),

    keap as (
        select * from {{ ref('stg_keap__' ~ m.keap_resource) }}
    ),

    customcrm as (
        select * from {{ ref('stg_customcrm__' ~ m.customcrm_resource) }}
    )
{% endmacro %}


{#- The columns every paired model starts with: the pair, whether it is new, both update
    times, Customcrm's version and the fields that do not parse on either side. -#}
{% macro paired_record_columns() %}
        matched.keap_id,
        matched.customcrm_id,
        matched.link_rule,
        matched.link_rule <> 'existing' as is_new_link,
        keap.updated_at as keap_updated_at,
        customcrm.updated_at as customcrm_updated_at,
        customcrm.version as customcrm_version,
        keap.unparseable_fields as keap_unparseable_fields,
        customcrm.unparseable_fields as customcrm_unparseable_fields
{%- endmacro %}


{#- Both sides of a paired model joined to the pair, and which pairs are compared: live on
    both sides, and no side the ingest has not read yet (created by the push a moment ago).
    `joins`: further joins of the model, between the sides and the condition. -#}
{% macro paired_joins(mapping, joins='') %}
    {%- set m = registry_mapping(mapping) %}
    {%- set keap_id = 'keap.keap_' ~ m.keap_singular ~ '_id' %}
    {%- set customcrm_id = 'customcrm.customcrm_' ~ m.customcrm_singular ~ '_id' %}
    from matched
    left join keap
        on {{ keap_id }} = matched.keap_id
    left join customcrm
        on {{ customcrm_id }} = matched.customcrm_id
    {{ joins }}
    where not coalesce(keap.is_deleted, false)
        and not coalesce(customcrm.is_deleted, false)
        and (matched.keap_id is null or {{ keap_id }} is not null)
        and (matched.customcrm_id is null or {{ customcrm_id }} is not null)
{%- endmacro %}
