{#- What Customcrm needs, per pair: a create (all of Keap's values, with ExternalRefs.keap
    and a deterministic Idempotency-Key), an update (a merge patch of the changed fields
    only, with If-Match), or a delete (when enabled for the mapping). References are
    translated through the parent mapping's links; a row whose parent is not linked yet
    is `waiting`, not dropped, and names the parents it waits for (`unlinked_parents`):
    the push fills them in when it has linked them earlier in the same run. Ends in a CTE
    `final`. -#}
{% macro customcrm_changes(mapping) %}
    merged as (
        select * from {{ ref('int_' ~ mapping ~ '__merged') }}
    ),

    pairs as (
        select keap_id, customcrm_id, link_rule, customcrm_version, keap_updated_at
        from {{ ref('int_' ~ mapping ~ '__paired') }}
    ),

    -- the links of every mapping a reference translates through (the registry's parents)
    parent_ids as (
        {%- for parent in registry()['parents'] %}
        select 'reference_{{ parent }}' as compare_as, keap_id, customcrm_id
        from {{ ref('int_' ~ parent ~ '__matched') }}
        where customcrm_id is not null
        {%- if not loop.last %}
        union all
        {%- endif %}
        {%- endfor %}
    ),

    stages as (
        select * from {{ ref('int_opportunity_stages') }}
    ),

    {%- if mapping == 'orders' %}
    -- Stage and Status are one value (a Keap stage) written two ways: when Customcrm's pair
    -- does not spell the stage it resolves to (Status changed alone, an unknown Stage), both
    -- are rewritten, whoever won the stage
    misspelled_stages as (
        select paired.keap_id
        from {{ ref('int_orders__paired') }} as paired
        inner join {{ ref('int_opportunity_stages') }} as resolved
            on resolved.stage_id = paired.customcrm_stage
        where paired.customcrm_id is not null
            and (paired.customcrm_stage_name is distinct from resolved.stage_name
                or paired.customcrm_status is distinct from resolved.customcrm_status)
    ),
    {%- endif %}

    writes as (
        select
            merged.keap_id,
            merged.customcrm_id,
            merged.field,
            merged.field_position,
            merged.customcrm_field,
            merged.compare_as,
            merged.merged_value,
            parent_ids.customcrm_id as parent_customcrm_id
        from merged
        left join parent_ids
            on parent_ids.compare_as = merged.compare_as
            and parent_ids.keap_id = merged.merged_value
        where (merged.winner = 'keap' and merged.keap_value is distinct from merged.customcrm_value)
        {%- if mapping == 'orders' %}
            or (merged.field = 'stage' and merged.keap_id in (select keap_id from misspelled_stages))
        {%- endif %}
    ),

    valued as (
        select
            keap_id,
            customcrm_id,
            field,
            field_position,
            customcrm_field,
            case
                when compare_as = 'boolean' then coalesce(to_json(merged_value = 'true'), 'null'::json)
                when compare_as like 'reference%' then coalesce(to_json(parent_customcrm_id), 'null'::json)
                when compare_as = 'stage' then coalesce(to_json(stages.stage_name), 'null'::json)
                else coalesce(to_json(merged_value), 'null'::json)
            end as value_json,
            case
                when compare_as like 'reference%' and merged_value is not null and parent_customcrm_id is null
                    then field || ' ' || merged_value || ' is not linked to Customcrm yet'
            end as waiting_reason,
            case
                when compare_as like 'reference%' and merged_value is not null and parent_customcrm_id is null
                    then {{ json_object_of(["'mapping'", "replace(compare_as, 'reference_', '')", "'keap_id'", 'merged_value']) }}
            end as unlinked_parent
        from writes
        left join stages
            on writes.compare_as = 'stage'
            and stages.stage_id = writes.merged_value
        union all
        -- an order's Status follows its stage, by the stage_status seed
        select
            keap_id,
            customcrm_id,
            'status',
            field_position,
            'Status',
            to_json(coalesce(stages.customcrm_status, 'open')),
            null,
            null
        from writes
        left join stages
            on stages.stage_id = writes.merged_value
        where writes.compare_as = 'stage'
    ),

    per_pair as (
        select
            keap_id,
            customcrm_id,
            {{ json_agg_object('customcrm_field', 'value_json') }} as changes,
            {{ agg_list('customcrm_field', order_by='field_position, ' ~ text_order('customcrm_field')) }} as fields,
            string_agg(waiting_reason, '; ' order by field_position, {{ text_order('customcrm_field') }}) as waiting_reason,
            {{ json_agg_object_of_non_null('customcrm_field', 'unlinked_parent') }} as unlinked_parents
        from valued
        group by keap_id, customcrm_id
    ),

    upserts as (
        select
            '{{ mapping }}' as mapping,
            case when pairs.customcrm_id is null then 'create' else 'update' end as op,
            pairs.keap_id,
            pairs.customcrm_id,
            case when pairs.customcrm_id is not null then '"' || pairs.customcrm_version || '"' end as if_match,
            case
                when pairs.customcrm_id is null then 'crmsync:{{ mapping }}:keap:' || pairs.keap_id
            end as idempotency_key,
            case
                when pairs.customcrm_id is null
                    then {{ json_patch(
                        "coalesce(per_pair.changes, '{}'::json)",
                        json_object_of(["'ExternalRefs'", json_object_of(["'keap'", 'pairs.keap_id'])])
                    ) }}
                else per_pair.changes
            end as payload,
            coalesce(per_pair.fields, {{ empty_text_list() }}) as fields,
            case when per_pair.waiting_reason is null then 'ready' else 'waiting' end as status,
            per_pair.waiting_reason,
            per_pair.unlinked_parents,
            pairs.keap_updated_at
        from pairs
        left join per_pair
            on per_pair.keap_id = pairs.keap_id
        where pairs.customcrm_id is null or per_pair.keap_id is not null
    ),

    {%- if mapping_var('delete_counterparts', mapping, false) %}
    deletes as (
        -- the Keap side of a link is gone: delete its Customcrm counterpart (enabled for {{ mapping }})
        select
            '{{ mapping }}' as mapping,
            'delete' as op,
            links.keap_id,
            links.customcrm_id,
            '"' || links.version || '"' as if_match,
            cast(null as varchar) as idempotency_key,
            cast(null as json) as payload,
            {{ empty_text_list() }} as fields,
            'ready' as status,
            cast(null as varchar) as waiting_reason,
            cast(null as json) as unlinked_parents,
            cast(null as timestamptz) as keap_updated_at
        from ({{ orphaned_links(mapping, 'keap') }}) as links
    ),
    {%- endif %}

    final as (
        select
            mapping,
            op,
            keap_id,
            customcrm_id,
            if_match,
            idempotency_key,
            payload,
            fields,
            status,
            waiting_reason,
            unlinked_parents,
            keap_updated_at
        from upserts
        {%- if mapping_var('delete_counterparts', mapping, false) %}
        union all
        select * from deletes
        {%- endif %}
    )
{% endmacro %}
