{#- The link rules of docs/specification.md, in order; the first that applies wins:
      1. a link that already exists (sync_state.links: links are state);
      2. a Customcrm record whose ExternalRefs.keap is the Keap id;
      3. natural keys, each only where unique on both sides among the records still
         unlinked (a key that is not unique links nothing and is listed for review);
      4. otherwise the Keap record is to be created in Customcrm.
    Only live records take part in new links. Defines CTEs ending in `final`: one row
    per live Keap record with mapping, keap_id, customcrm_id, link_rule (existing,
    external_ref, natural_key, create, ambiguous), natural_key, natural_key_value,
    customcrm_candidates.

    keap / customcrm: relations with columns keap_id / customcrm_id, keap_ref and the keys.
    natural_keys: [{'name': ..., 'keap': expr, 'customcrm': expr}] in the order they are tried. -#}
{% macro match_records(mapping, keap, customcrm, natural_keys) %}

    keap_live as (
        select * from {{ keap }} where not is_deleted
    ),

    customcrm_live as (
        select * from {{ customcrm }} where not is_deleted
    ),

    existing_links as (
        select keap_id, customcrm_id
        from {{ ref('stg_sync_state__links') }}
        where mapping = '{{ mapping }}'
    ),

    keap_open_0 as (
        select keap_live.*
        from keap_live
        left join existing_links on existing_links.keap_id = keap_live.keap_id
        where existing_links.keap_id is null
    ),

    customcrm_open_0 as (
        select customcrm_live.*
        from customcrm_live
        left join existing_links on existing_links.customcrm_id = customcrm_live.customcrm_id
        where existing_links.customcrm_id is null
    ),

    -- rule 2: the sync created it (perhaps in a run that crashed before recording the link);
    -- two Customcrm records claiming one Keap id link nothing
    by_external_ref as (
        select keap_id, customcrm_id
        from (
            select
                keap_open_0.keap_id,
                customcrm_open_0.customcrm_id,
                count(*) over (partition by keap_open_0.keap_id) as claims
            from keap_open_0
            inner join customcrm_open_0
                on customcrm_open_0.keap_ref = keap_open_0.keap_id
        ) as claimed
        where claims = 1
    ),

    -- the open records less those linked: `not exists`, an anti-join on both engines, where
    -- PostgreSQL runs a `not in` whose list outgrows work_mem as a scan of the list per row
    -- (hours at 100,000 records; the ids are never null, so the two mean the same)
    keap_open_1 as (
        select * from keap_open_0
        where not exists (select 1 from by_external_ref where by_external_ref.keap_id = keap_open_0.keap_id)
    ),

    customcrm_open_1 as (
        select * from customcrm_open_0
        where not exists (
            select 1 from by_external_ref where by_external_ref.customcrm_id = customcrm_open_0.customcrm_id
        )
    ),

    {%- for key in natural_keys %}
    {%- set n = loop.index %}

    -- rule 3.{{ n }}: {{ key.name }}, unique on both sides among the unlinked
    keap_keys_{{ n }} as (
        select keap_id, {{ key.keap }} as key_value
        from keap_open_{{ n }}
        where {{ key.keap }} is not null
    ),

    customcrm_keys_{{ n }} as (
        select customcrm_id, {{ key.customcrm }} as key_value
        from customcrm_open_{{ n }}
        where {{ key.customcrm }} is not null
    ),

    keap_key_counts_{{ n }} as (
        select key_value, count(*) as keap_count from keap_keys_{{ n }} group by key_value
    ),

    customcrm_key_counts_{{ n }} as (
        select key_value, count(*) as customcrm_count from customcrm_keys_{{ n }} group by key_value
    ),

    by_key_{{ n }} as (
        select
            keap_keys_{{ n }}.keap_id,
            customcrm_keys_{{ n }}.customcrm_id,
            keap_keys_{{ n }}.key_value
        from keap_keys_{{ n }}
        inner join customcrm_keys_{{ n }}
            on customcrm_keys_{{ n }}.key_value = keap_keys_{{ n }}.key_value
        inner join keap_key_counts_{{ n }}
            on keap_key_counts_{{ n }}.key_value = keap_keys_{{ n }}.key_value
        inner join customcrm_key_counts_{{ n }}
            on customcrm_key_counts_{{ n }}.key_value = keap_keys_{{ n }}.key_value
        where keap_key_counts_{{ n }}.keap_count = 1
            and customcrm_key_counts_{{ n }}.customcrm_count = 1
    ),

    -- a key shared by two or more unlinked records on either side: listed for review
    ambiguous_{{ n }} as (
        select
            '{{ key.name }}' as natural_key,
            keap_key_counts_{{ n }}.key_value,
            keap_key_counts_{{ n }}.keap_count,
            coalesce(customcrm_key_counts_{{ n }}.customcrm_count, 0) as customcrm_count
        from keap_key_counts_{{ n }}
        left join customcrm_key_counts_{{ n }}
            on customcrm_key_counts_{{ n }}.key_value = keap_key_counts_{{ n }}.key_value
        where keap_key_counts_{{ n }}.keap_count > 1
            or coalesce(customcrm_key_counts_{{ n }}.customcrm_count, 0) > 1
    ),

    keap_open_{{ n + 1 }} as (
        select * from keap_open_{{ n }}
        where not exists (
            select 1 from by_key_{{ n }} where by_key_{{ n }}.keap_id = keap_open_{{ n }}.keap_id
        )
    ),

    customcrm_open_{{ n + 1 }} as (
        select * from customcrm_open_{{ n }}
        where not exists (
            select 1 from by_key_{{ n }} where by_key_{{ n }}.customcrm_id = customcrm_open_{{ n }}.customcrm_id
        )
    ),
    {%- endfor %}

    {%- set last = natural_keys | length + 1 %}

    ambiguous_keap as (
        {%- for key in natural_keys %}
        {%- set n = loop.index %}
        select
            keap_keys_{{ n }}.keap_id,
            ambiguous_{{ n }}.natural_key,
            ambiguous_{{ n }}.key_value,
            (
                select {{ agg_list('customcrm_keys_' ~ n ~ '.customcrm_id', order_by=text_order('customcrm_keys_' ~ n ~ '.customcrm_id')) }}
                from customcrm_keys_{{ n }}
                where customcrm_keys_{{ n }}.key_value = keap_keys_{{ n }}.key_value
            ) as customcrm_candidates
        from keap_keys_{{ n }}
        inner join ambiguous_{{ n }}
            on ambiguous_{{ n }}.key_value = keap_keys_{{ n }}.key_value
        {{ "union all" if not loop.last }}
        {%- else %}
        select cast(null as varchar) as keap_id, cast(null as varchar) as natural_key,
            cast(null as varchar) as key_value, cast(null as varchar[]) as customcrm_candidates
        where false
        {%- endfor %}
    ),

    matched as (
        select keap_id, customcrm_id, 'existing' as link_rule,
            cast(null as varchar) as natural_key, cast(null as varchar) as natural_key_value,
            cast(null as varchar[]) as customcrm_candidates
        from existing_links
        where keap_id in (select keap_id from keap_live)
        union all
        select keap_id, customcrm_id, 'external_ref', null, null, null
        from by_external_ref
        {%- for key in natural_keys %}
        union all
        select keap_id, customcrm_id, 'natural_key', '{{ key.name }}', cast(key_value as varchar), null
        from by_key_{{ loop.index }}
        {%- endfor %}
        union all
        -- no counterpart: hold it for review when its key is ambiguous, else create it
        select
            keap_open_{{ last }}.keap_id,
            null,
            case when ambiguous_first.keap_id is not null then 'ambiguous' else 'create' end,
            ambiguous_first.natural_key,
            cast(ambiguous_first.key_value as varchar),
            ambiguous_first.customcrm_candidates
        from keap_open_{{ last }}
        left join (
            select * from (
                select
                    *,
                    row_number() over (partition by keap_id order by {{ text_order('natural_key') }}) as key_rank
                from ambiguous_keap
            ) as ranked
            where key_rank = 1
        ) as ambiguous_first
            on ambiguous_first.keap_id = keap_open_{{ last }}.keap_id
    ),

    final as (
        select
            '{{ mapping }}' as mapping,
            keap_id,
            customcrm_id,
            link_rule,
            natural_key,
            natural_key_value,
            customcrm_candidates
        from matched
    )
{% endmacro %}


{#- Sesam's reverse flow, off by default (var create_in_keap): live Customcrm customers,
    contacts and products that no Keap record links or matches become pairs without a Keap
    side, so the merge gives every Customcrm value and the push creates them in Keap. A
    Customcrm record whose natural key is ambiguous (a candidate in review_ambiguous_matches)
    is not created: linking or creating it would be a guess, as for the Keap records. -#}
{% macro customcrm_only_pairs(mapping, customcrm_model, customcrm_id_column) %}
    {%- if var('create_in_keap') and registry_mapping(mapping)['creates_in_keap'] %}
    union all
    select cast(null as varchar), customcrm.{{ customcrm_id_column }}, 'create_in_keap'
    from {{ ref(customcrm_model) }} as customcrm
    where not customcrm.is_deleted
        -- anti-joins (`not exists`; see match_records for why not `not in`)
        and not exists (
            select 1 from {{ ref('int_' ~ mapping ~ '__matched') }} as matched
            where matched.customcrm_id = customcrm.{{ customcrm_id_column }}
        )
        and not exists (
            select 1 from {{ ref('stg_sync_state__links') }} as links
            where links.mapping = '{{ mapping }}' and links.customcrm_id = customcrm.{{ customcrm_id_column }}
        )
        -- a candidate of an ambiguous match group waits for review, as the group's Keap records do
        and not exists (
            select 1
            from (
                select unnest(customcrm_candidates) as candidate_id
                from {{ ref('int_' ~ mapping ~ '__matched') }}
                where link_rule = 'ambiguous' and customcrm_candidates is not null
            ) as candidates
            where candidates.candidate_id = customcrm.{{ customcrm_id_column }}
        )
    {%- endif %}
{% endmacro %}
