with

stages as (
    select * from {{ ref('int_opportunity_stages') }}
),

keap as (
    select
        opportunities.keap_opportunity_id as keap_id,
        cast(null as varchar) as keap_ref,
        opportunities.is_deleted
    from {{ ref('stg_keap__opportunities') }} as opportunities
    left join stages
        on stages.stage_id = opportunities.stage_id
    {%- if var('won_opportunities_only') %}
    where stages.customcrm_status = 'won'
    {%- endif %}
),

customcrm as (
    select
        customcrm_order_id as customcrm_id,
        keap_ref,
        is_deleted
    from {{ ref('stg_customcrm__orders') }}
),

{{ match_records('orders', 'keap', 'customcrm', []) }}

select * from final
