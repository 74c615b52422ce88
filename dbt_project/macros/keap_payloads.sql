{#- What Keap needs, per pair: a PATCH body in Keap's own shape holding only what changed,
    and its update_mask (the top-level properties sent). Where Keap nests a mapped value, the
    body carries the whole object or array as Keap has it with the mapped keys changed:
    a PATCH replaces arrays whole, so EMAIL2, PHONE2 and the SHIPPING address go back
    untouched. Ends in a CTE `final`.

    targets (the registry's Keap targets of the mapping): field -> {'kind': plain | object_key | array_item | reference, 'property': top-level
    Keap property, 'key': key inside it, 'slot': the array item (EMAIL1, PHONE1, BILLING),
    'json': how the value is written (text | number | minor_units | boolean | date | close_time)}.
    create_requires (the registry's too): what Keap's document requires of a create, as groups of properties of
    which at least one must have a value; a create that lacks one waits, with the reason. -#}
{% macro keap_changes(mapping, keap_model, keap_id_column) %}
    {%- set targets = registry_keap_targets(mapping) -%}
    {%- set create_requires = registry_create_requires(mapping) -%}
    merged as (
        select * from {{ ref('int_' ~ mapping ~ '__merged') }}
    ),

    keap as (
        select * from {{ ref(keap_model) }}
    ),

    -- the record as Keap sent it, where a PATCH body starts from
    sent as (
        select * from {{ ref('stg_keap__payloads') }}
        where resource = '{{ registry_mapping(mapping)['keap_resource'] }}'
    ),

    countries as (
        select * from {{ ref('country_codes') }}
    ),

    changed as (
        select
            -- a Keap record to create has no id yet: its Customcrm id stands in
            coalesce(merged.keap_id, 'new:' || merged.customcrm_id) as keap_id,
            merged.keap_id is null as is_create,
            merged.customcrm_id,
            merged.field,
            merged.field_position,
            merged.merged_value,
            merged.keap_updated_at,
            case merged.field
                {%- for field, target in targets.items() %}
                when '{{ field }}' then '{{ target.property }}'
                {%- endfor %}
            end as property,
            case merged.field
                {%- for field, target in targets.items() %}
                when '{{ field }}' then '{{ target.kind }}'
                {%- endfor %}
            end as kind,
            case merged.field
                {%- for field, target in targets.items() if target.get('slot') %}
                when '{{ field }}' then '{{ target.slot }}'
                {%- endfor %}
                when '' then null
            end as slot,
            case merged.field
                {%- for field, target in targets.items() if target.get('key') %}
                when '{{ field }}' then
                    {%- if target.key == 'zip' %}
                    -- a ZipCode goes to the field the address already uses; a new address uses
                    -- zip_code in the USA and postal_code elsewhere
                    coalesce(keap.zip_field, case when coalesce(keap.country_alpha3, '') = 'USA' then 'zip_code' else 'postal_code' end)
                    {%- else %}
                    '{{ target.key }}'
                    {%- endif %}
                {%- endfor %}
                when '' then null
            end as item_key,
            case merged.field
                {%- for field, target in targets.items() %}
                when '{{ field }}' then
                    {%- if target.json == 'number' %} coalesce(to_json(cast(merged.merged_value as double precision)), 'null'::json)
                    {%- elif target.json == 'minor_units' %} coalesce(to_json(cast(round(cast(merged.merged_value as decimal(18, 2)) * 100) as bigint)), 'null'::json)
                    {%- elif target.json == 'boolean' %} coalesce(to_json(merged.merged_value = 'true'), 'null'::json)
                    {%- elif target.json == 'country' %} coalesce(to_json(countries.alpha3), 'null'::json)
                    {%- elif target.json == 'close_time' %}
                    coalesce(to_json(merged.merged_value || 'T'
                        || coalesce({{ utc_time_text('keap.estimated_close_time') }}, '00:00:00.000')
                        || 'Z'), 'null'::json)
                    {%- elif target.kind == 'reference' %} case when merged.merged_value is null then 'null'::json else {{ json_object_of(["'id'", 'merged.merged_value']) }} end
                    {%- else %} coalesce(to_json(merged.merged_value), 'null'::json)
                    {%- endif %}
                {%- endfor %}
            end as value_json,
            case
                when merged.merged_value like 'customcrm:%'
                    then merged.field || ' ' || substr(merged.merged_value, 11) || ' has no Keap counterpart yet'
            end as waiting_reason,
            cast(sent.keap_payload as json) as keap_payload
        from merged
        left join keap
            on keap.{{ keap_id_column }} = merged.keap_id
        left join sent
            on sent.keap_id = merged.keap_id
        left join countries
            on countries.alpha2 = merged.merged_value
        where merged.winner = 'customcrm'
            and merged.keap_value is distinct from merged.customcrm_value
            and merged.customcrm_id is not null
    ),

    -- a mapped key inside an object (email_address.email) or an array item (EMAIL1's email)
    item_patches as (
        select
            keap_id,
            property,
            kind,
            slot,
            {{ any_value_of('item_key') }} as main_key,
            {{ any_value_of('keap_payload') }} as keap_payload,
            {{ json_agg_object('item_key', 'value_json') }} as patch
        from changed
        where kind in ('object_key', 'array_item')
        group by keap_id, property, kind, slot
    ),

    nested_merged as (
        select
            *,
            -- what Keap has now, with the mapped keys patched in (a null removes a key)
            {{ json_patch(
                "coalesce(
                    case kind
                        when 'object_key' then " ~ json_get('keap_payload', 'property') ~ "
                        else " ~ json_array_item_by(json_get('keap_payload', 'property'), 'slot') ~ "
                    end,
                    case kind when 'object_key' then '{}'::json else " ~ json_object_of(["'field'", 'slot']) ~ " end
                )",
                'patch'
            ) }} as merged_object
        from item_patches
    ),

    nested_values as (
        select
            keap_id,
            property,
            kind,
            slot,
            keap_payload,
            case
                -- an email or phone emptied takes its object or item with it
                when kind = 'object_key' and {{ json_get('merged_object', 'main_key') }} is null then null
                when kind = 'array_item' and slot like 'EMAIL%' and {{ json_text('merged_object', 'email') }} is null then null
                when kind = 'array_item' and slot like 'PHONE%' and {{ json_text('merged_object', 'number') }} is null then null
                when {{ json_has_only_key('merged_object', 'field') }} then null
                else merged_object
            end as new_value
        from nested_merged
    ),

    top_values as (
        select keap_id, property, value_json
        from changed
        where kind in ('plain', 'reference')
        union all
        select keap_id, property, coalesce(new_value, 'null'::json)
        from nested_values
        where kind = 'object_key'
        union all
        select
            keap_id,
            property,
            -- the whole array: the new item first, every other item as Keap has it, less what
            -- Keap answers with but a write may not carry (an email's opt-in status)
            {{ keap_array_with_item('keap_payload', 'property', 'slot', 'new_value') }}
        from nested_values
        where kind = 'array_item'
    ),

    per_pair as (
        select
            changed.keap_id,
            bool_or(changed.is_create) as is_create,
            {{ any_value_of('changed.customcrm_id') }} as customcrm_id,
            {{ any_value_of('changed.keap_updated_at') }} as keap_updated_at,
            {{ agg_list('changed.field', distinct=true) }} as fields,
            string_agg(changed.waiting_reason, '; ' order by changed.field_position) as waiting_reason
        from changed
        group by changed.keap_id
    ),

    bodies as (
        select
            keap_id,
            {{ json_agg_object('property', 'value_json') }} as payload,
            {{ agg_list('property', order_by=text_order('property')) }} as update_mask
        from top_values
        group by keap_id
    ),

    checked as (
        select
            per_pair.*,
            bodies.payload,
            bodies.update_mask,
            case when per_pair.is_create then concat_ws('; ',
                {%- for group in create_requires %}
                case when {% for property in group %}coalesce(cast({{ json_get('bodies.payload', "'" ~ property ~ "'") }} as varchar), 'null') in ('null', '[]', '""'){{ " and " if not loop.last }}{% endfor %}
                    then 'Keap needs {{ group | join(" or ") }} to create it: set it in Customcrm' end,
                {%- endfor %}
                null
            ) end as missing_reason
        from per_pair
        inner join bodies
            on bodies.keap_id = per_pair.keap_id
    ),

    upserts as (
        select
            '{{ mapping }}' as mapping,
            case when is_create then 'create' else 'update' end as op,
            case when not is_create then keap_id end as keap_id,
            customcrm_id,
            case when not is_create then update_mask end as update_mask,
            payload,
            {{ list_sorted('fields') }} as fields,
            case when waiting_reason is null and nullif(missing_reason, '') is null then 'ready' else 'waiting' end as status,
            nullif(concat_ws('; ', waiting_reason, nullif(missing_reason, '')), '') as waiting_reason,
            keap_updated_at
        from checked
    ),

    {%- if mapping_var('delete_counterparts', mapping, false) %}
    deletes as (
        -- the Customcrm side of a link is gone: delete its Keap counterpart (enabled for {{ mapping }})
        select
            '{{ mapping }}' as mapping,
            'delete' as op,
            links.keap_id,
            links.customcrm_id,
            cast(null as varchar[]) as update_mask,
            cast(null as json) as payload,
            {{ empty_text_list() }} as fields,
            'ready' as status,
            cast(null as varchar) as waiting_reason,
            links.updated_at as keap_updated_at
        from ({{ orphaned_links(mapping, 'customcrm') }}) as links
    ),
    {%- endif %}

    final as (
        select
            mapping,
            op,
            keap_id,
            customcrm_id,
            update_mask,
            payload,
            fields,
            status,
            waiting_reason,
            keap_updated_at
        from upserts
        {%- if mapping_var('delete_counterparts', mapping, false) %}
        union all
        select * from deletes
        {%- endif %}
    )
{% endmacro %}


{#- Keap's array `property` of `payload` with the item for `slot` replaced by `new_item` (JSON,
    null: removed) in front, every other item as Keap has it, less what Keap answers with but
    a write may not carry (an email's opt-in status). -#}
{% macro keap_array_with_item(payload, property, slot, new_item) -%}
    {{ return(adapter.dispatch('keap_array_with_item', 'crmsync')(payload, property, slot, new_item)) }}
{%- endmacro %}

{% macro duckdb__keap_array_with_item(payload, property, slot, new_item) -%}
    to_json(list_transform(
                list_concat(
                    case when {{ new_item }} is null then []::json[] else [{{ new_item }}] end,
                    list_filter(
                        coalesce(cast(json_extract({{ payload }}, '$.' || {{ property }}) as json[]), []::json[]),
                        lambda item: (item ->> '$.field') is distinct from {{ slot }}
                    )
                ),
                lambda item: case
                    when {{ property }} = 'email_addresses'
                        then json_merge_patch(item, '{"is_opt_in": null, "email_opt_status": null}')
                    else item
                end
            ))
{%- endmacro %}

{% macro postgres__keap_array_with_item(payload, property, slot, new_item) -%}
    (
        select coalesce(json_agg(items.item order by items.position), '[]'::json)
        from (
            select cast({{ new_item }} as json) as item, 0 as position
            where {{ new_item }} is not null
            union all
            select elements.item, elements.position
            from json_array_elements(
                case when json_typeof(cast({{ payload }} as json) -> {{ property }}) = 'array'
                    then cast({{ payload }} as json) -> {{ property }} end
            ) with ordinality as elements(item, position)
            where (elements.item ->> 'field') is distinct from {{ slot }}
        ) as kept
        cross join lateral (
            select case
                when {{ property }} = 'email_addresses'
                    then crmsync_support.json_merge_patch(kept.item, '{"is_opt_in": null, "email_opt_status": null}')
                else kept.item
            end as item, kept.position as position
        ) as items
    )
{%- endmacro %}
