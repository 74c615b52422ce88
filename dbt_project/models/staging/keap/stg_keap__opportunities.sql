{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='keap_opportunity_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_keap', 'opportunities', 'keap_opportunity_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

deletions as (
    select * from {{ ref('stg_keap__deletions') }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_keap', 'opportunities', unless_parsed('keap_opportunity_id', 'opportunities', 'deletions', 'keap_id')) }}
),

opportunities as (
    select
        id as keap_opportunity_id,
        {{ canon_text(json_text('payload_doc', 'opportunity_title')) }} as title,
        {{ canon_text(json_text('payload_doc', 'contact.id')) }} as keap_contact_id,
        {{ canon_text(json_text('payload_doc', 'stage.id')) }} as stage_id,
        {{ canon_text(json_text('payload_doc', 'stage.name')) }} as stage_name,
        {{ json_text('payload_doc', 'projected_revenue_high') }} as amount_text,
        {{ canon_money(json_get('payload', "'projected_revenue_high'")) }} as amount,
        {{ canon_text(json_text('payload_doc', 'estimated_close_time')) }} as estimated_close_time_text,
        {{ keap_timestamp(json_text('payload_doc', 'estimated_close_time')) }} as estimated_close_time,
        {{ canon_text(json_text('payload_doc', 'opportunity_notes')) }} as description,
        {{ keap_timestamp(json_text('payload_doc', 'last_updated_time')) }} as updated_at,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        opportunities.keap_opportunity_id,
        opportunities.title,
        opportunities.keap_contact_id,
        opportunities.stage_id,
        opportunities.stage_name,
        opportunities.amount,
        -- the UTC date, whatever the session's time zone
        cast(timezone('UTC', opportunities.estimated_close_time) as date) as close_date,
        opportunities.estimated_close_time,
        opportunities.description,
        opportunities.updated_at,
        {{ unparseable([
            ('amount', 'opportunities.amount_text', 'opportunities.amount'),
            ('close_date', 'opportunities.estimated_close_time_text', 'opportunities.estimated_close_time'),
        ]) }} as unparseable_fields,
        deletions.deleted_at,
        deletions.keap_id is not null as is_deleted,
        opportunities.extracted_at,
        '{{ invocation_id }}' as parsed_in_build
    from opportunities
    left join deletions
        on deletions.resource = 'opportunities'
        and deletions.keap_id = opportunities.keap_opportunity_id
)

select * from final
