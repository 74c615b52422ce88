{#- The mapped fields of the current merge model, from its own `meta.mapping_fields`
    (models/intermediate/_intermediate__models.yml): the one source of truth that the merge
    iterates over, the dbt docs show, and `crmsync dataflow` prints. Read from `model`, so
    it works in dbt unit tests too. -#}
{% macro mapping_fields() %}
    {%- set fields = [] -%}
    {%- for f in model.config.meta.get('mapping_fields', []) -%}
        {%- do fields.append({
            'field': f.field,
            'keap_property': f.keap_property,
            'customcrm_property': f.customcrm_property,
            'customcrm_field': f.customcrm_property.split(' ')[0],
            'customcrm_type': f.get('customcrm_type', 'string'),
            'compare_as': f.get('compare_as', 'text'),
            'direction': f.get('direction', 'both'),
        }) -%}
    {%- endfor -%}
    {%- if execute and not fields -%}
        {{ exceptions.raise_compiler_error(model.name ~ ': no meta.mapping_fields') }}
    {%- endif -%}
    {{ return(fields) }}
{% endmacro %}


{#- One row per pair and mapped field: the two values in canonical text, side by side.
    Derived fields (an order's Status, which follows its stage) are not merged on their own,
    and a field whose value does not parse on either side (`*_unparseable_fields`) is left
    out: nothing is written for it and its base stays, until the value is fixed. -#}
{% macro unpivot_fields(mapping, paired, fields) %}
    {%- for f in fields | rejectattr('direction', 'equalto', 'derived') %}
    select
        '{{ mapping }}' as mapping,
        keap_id,
        customcrm_id,
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
        {{ canonical_text('customcrm_' ~ f.field, f.compare_as) }} as customcrm_value
    from {{ paired }}
    where not list_contains(coalesce(keap_unparseable_fields, cast([] as varchar[])), '{{ f.field }}')
        and not list_contains(coalesce(customcrm_unparseable_fields, cast([] as varchar[])), '{{ f.field }}')
    {{ "union all" if not loop.last }}
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
    {%- set policy = var('conflict_policy')[mapping] -%}
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

    timed as (
        select
            with_base.*,
            epoch(with_base.customcrm_updated_at) - clocks.customcrm_offset_s
                - (epoch(with_base.keap_updated_at) - clocks.keap_offset_s) as customcrm_lead_s,
            clocks.uncertainty_s as clock_uncertainty_s
        from with_base
        cross join clocks
    ),

    changes as (
        select
            * exclude (customcrm_lead_s, clock_uncertainty_s),
            has_base and keap_value is distinct from base_value as keap_changed,
            has_base and customcrm_value is distinct from base_value as customcrm_changed,
            coalesce(customcrm_lead_s > clock_uncertainty_s, false) as customcrm_is_newer,
            coalesce(abs(customcrm_lead_s) <= clock_uncertainty_s, false) as is_clock_tie
        from timed
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
