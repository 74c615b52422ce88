{#- A link table: every record of both systems for one mapping, once, with what is
    linked to what and why - so an analyst can answer "which Keap contacts have no
    Customcrm counterpart, and why" with a where clause. -#}
{% macro link_table(mapping, keap_sync_model) %}
    sides as (
        select * from {{ ref('int_record_sides') }}
        where mapping = '{{ mapping }}'
    ),

    keap_side as (
        select * from sides where side = 'keap'
    ),

    customcrm_side as (
        select * from sides where side = 'customcrm'
    ),

    links as (
        select * from {{ ref('stg_sync_state__links') }}
        where mapping = '{{ mapping }}'
    ),

    matched as (
        select * from {{ ref('int_' ~ mapping ~ '__matched') }}
    ),

    -- Customcrm records of an ambiguous match group: neither linked nor created in Keap
    held_for_review as (
        select
            candidate as customcrm_id,
            {{ any_value_of('natural_key') }} as held_key,
            {{ any_value_of('natural_key_value') }} as held_key_value,
            {{ agg_list('keap_id', order_by=text_order('keap_id')) }} as keap_candidates
        from (
            select unnest(customcrm_candidates) as candidate, natural_key, natural_key_value, keap_id
            from matched
            where link_rule = 'ambiguous' and customcrm_candidates is not null
        ) as candidates
        group by candidate
    ),

    to_customcrm as (
        select * from {{ ref('sync_customcrm__' ~ mapping) }}
    ),

    to_keap as (
        select * from {{ ref(keap_sync_model) }}
    ),

    conflicts as (
        select keap_id, count(*) as open_conflicts
        from {{ ref('int_' ~ mapping ~ '__merged') }}
        where is_conflict
        group by keap_id
    ),

    rejections as (
        select
            record_key,
            string_agg(
                target || ' refused ' || op || ': ' || reason
                    || case when is_ignored then ' (set aside by ' || coalesce(ignored_by, 'someone') || ': '
                        || coalesce(ignore_reason, '') || ')' else '' end,
                '; ' order by target
            ) as rejection_reason
        from {{ ref('stg_sync_state__rejections') }}
        where mapping = '{{ mapping }}'
        group by record_key
    ),

    keap_rows as (
        select
            keap_side.record_id as keap_id,
            coalesce(links.customcrm_id, matched.customcrm_id) as customcrm_id,
            keap_side.display_name as keap_name,
            keap_side.natural_key as keap_key,
            keap_side.is_deleted as keap_deleted,
            keap_side.deleted_at as keap_deleted_at,
            links.link_rule as recorded_link_rule,
            matched.link_rule as match_rule,
            matched.natural_key,
            matched.natural_key_value,
            matched.customcrm_candidates,
            links.linked_at,
            links.last_synced_at
        from keap_side
        left join links
            on links.keap_id = keap_side.record_id
        left join matched
            on matched.keap_id = keap_side.record_id
    ),

    customcrm_only as (
        select customcrm_side.record_id as customcrm_id
        from customcrm_side
        -- not exists, not `not in`: an anti-join on both engines (PostgreSQL runs a `not in`
        -- whose list outgrows work_mem as a scan of the list per row, macros/matching.sql)
        where not exists (
            select 1 from keap_rows where keap_rows.customcrm_id = customcrm_side.record_id
        )
    ),

    all_rows as (
        select * from keap_rows
        union all
        select
            null, customcrm_only.customcrm_id, null, null, false, null, null, null, null, null, null, null, null
        from customcrm_only
    ),

    described as (
        select
            all_rows.*,
            customcrm_side.display_name as customcrm_name,
            customcrm_side.natural_key as customcrm_key,
            coalesce(customcrm_side.is_deleted, false) as customcrm_deleted,
            customcrm_side.deleted_at as customcrm_deleted_at,
            to_customcrm.op as pending_customcrm_op,
            to_customcrm.fields as pending_customcrm_fields,
            to_keap.fields as pending_keap_fields,
            coalesce(to_customcrm.waiting_reason, to_keap.waiting_reason) as waiting_reason,
            coalesce(conflicts.open_conflicts, 0) as conflicts_this_run,
            rejections.rejection_reason,
            held_for_review.held_key,
            held_for_review.held_key_value,
            held_for_review.keap_candidates
        from all_rows
        left join customcrm_side
            on customcrm_side.record_id = all_rows.customcrm_id
        left join to_customcrm
            on to_customcrm.keap_id = all_rows.keap_id
        left join to_keap
            on to_keap.keap_id = all_rows.keap_id
        left join conflicts
            on conflicts.keap_id = all_rows.keap_id
        left join rejections
            on rejections.record_key = coalesce(all_rows.keap_id, all_rows.customcrm_id)
        left join held_for_review
            on all_rows.keap_id is null
            and held_for_review.customcrm_id = all_rows.customcrm_id
    ),

    final as (
        select
            '{{ mapping }}' as mapping,
            keap_id,
            customcrm_id,
            keap_name,
            keap_key,
            customcrm_name,
            customcrm_key,
            case
                when recorded_link_rule is not null and keap_deleted and customcrm_deleted then 'orphaned'
                when recorded_link_rule is not null and keap_deleted then 'orphaned'
                when recorded_link_rule is not null and customcrm_deleted then 'orphaned'
                when rejection_reason is not null then 'rejected'
                when waiting_reason is not null then 'waiting'
                when recorded_link_rule is not null then 'linked'
                when keap_id is null and held_key is not null then 'ambiguous'
                when keap_id is null then 'customcrm_only'
                when keap_deleted then 'deleted_in_keap'
                when match_rule in ('external_ref', 'natural_key') then 'to_be_linked'
                when match_rule = 'ambiguous' then 'ambiguous'
                when match_rule = 'create' then 'to_be_created'
                else 'unknown'
            end as link_status,
            case
                when recorded_link_rule is not null and keap_deleted and customcrm_deleted
                    then 'deleted on both sides; the link is kept for the record'
                when recorded_link_rule is not null and keap_deleted
                    then 'deleted in Keap on ' || {{ date_text('keap_deleted_at') }}
                        || '; the Customcrm record is kept (deleting counterparts is off by default)'
                when recorded_link_rule is not null and customcrm_deleted
                    then 'deleted in Customcrm on ' || {{ date_text('customcrm_deleted_at') }}
                        || '; the Keap record is kept (deleting counterparts is off by default)'
                when rejection_reason is not null then rejection_reason
                    || ' (sent again once its values change, or after a wait; `crmsync rejections`)'
                when waiting_reason is not null then 'waiting: ' || waiting_reason
                when recorded_link_rule = 'created_in_customcrm' then 'created in Customcrm by the sync'
                when recorded_link_rule = 'created_in_keap' then 'created in Keap by the sync'
                when recorded_link_rule = 'external_ref' then 'linked by ExternalRefs.keap'
                when recorded_link_rule = 'natural_key' then 'linked by a natural key'
                when keap_id is null and held_key is not null then held_key || ' ' || held_key_value
                    || ' is shared by several unlinked records (Keap candidates: '
                    || array_to_string(keap_candidates, ', ') || '): review; it is not created in Keap'
                when keap_id is null then 'only in Customcrm: creating Keap records is '
                    || {{ "'on'" if var('create_in_keap') else "'off'" }}
                when keap_deleted then 'deleted in Keap before it was ever linked'
                when match_rule = 'external_ref' then 'found by ExternalRefs.keap; linked by the next push'
                when match_rule = 'natural_key' then 'matched by ' || natural_key || ' ' || natural_key_value
                    || '; linked by the next push'
                when match_rule = 'ambiguous' then natural_key || ' ' || natural_key_value
                    || ' is shared by several unlinked records (Customcrm candidates: '
                    || coalesce(array_to_string(customcrm_candidates, ', '), 'none') || '): review'
                when match_rule = 'create' then 'no counterpart: the next push creates it in Customcrm'
            end as status_reason,
            coalesce(recorded_link_rule, match_rule) as link_rule,
            linked_at,
            last_synced_at,
            keap_deleted,
            keap_deleted_at,
            customcrm_deleted,
            customcrm_deleted_at,
            pending_customcrm_op,
            pending_customcrm_fields,
            pending_keap_fields,
            conflicts_this_run
        from described
    )
{% endmacro %}


{#- Links whose `gone` side was deleted while the other is still there: with
    delete_counterparts, the other side is deleted (only records a link covers). -#}
{% macro orphaned_links(mapping, gone) %}
    {%- set kept = 'customcrm' if gone == 'keap' else 'keap' %}
    select
        links.keap_id,
        links.customcrm_id,
        kept_side.version,
        kept_side.updated_at
    from {{ ref('stg_sync_state__links') }} as links
    inner join {{ ref('int_record_sides') }} as gone_side
        on gone_side.mapping = links.mapping
        and gone_side.side = '{{ gone }}'
        and gone_side.record_id = links.{{ gone }}_id
    inner join {{ ref('int_record_sides') }} as kept_side
        on kept_side.mapping = links.mapping
        and kept_side.side = '{{ kept }}'
        and kept_side.record_id = links.{{ kept }}_id
    where links.mapping = '{{ mapping }}'
        and gone_side.is_deleted
        and not kept_side.is_deleted
{% endmacro %}
