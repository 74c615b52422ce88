with

matched as (
    -- linked and matched pairs, and Keap records to be created (no Customcrm side yet:
    -- the merge then gives every Keap value, as a value beats an empty one)
    select keap_id, customcrm_id, link_rule from {{ ref('int_orders__matched') }}
    where link_rule <> 'ambiguous'
    {{ customcrm_only_pairs('orders', 'stg_customcrm__orders', 'customcrm_order_id') }}
),

keap as (
    select * from {{ ref('stg_keap__opportunities') }}
),

keap_contacts as (
    select keap_contact_id, keap_company_id from {{ ref('stg_keap__contacts') }}
),

customcrm as (
    select * from {{ ref('stg_customcrm__orders') }}
),

contact_pairs as (
    select keap_id, customcrm_id from {{ ref('int_contacts__matched') }}
    where customcrm_id is not null
),

customer_pairs as (
    select keap_id, customcrm_id from {{ ref('int_customers__matched') }}
    where customcrm_id is not null
),

stages as (
    select * from {{ ref('int_opportunity_stages') }}
),

-- From Customcrm, Stage names a Keap stage when one has that name (and Status agrees
-- with it); otherwise Status picks the stage the seed names for it.
customcrm_stages as (
    select
        customcrm.customcrm_order_id,
        case
            when named.stage_id is not null
                and (customcrm.status is null or named.customcrm_status = customcrm.status)
                then named.stage_id
            else for_status.stage_id
        end as stage_id
    from customcrm
    left join stages as named
        on lower(named.stage_name) = lower(customcrm.stage)
    left join stages as for_status
        on for_status.customcrm_status = customcrm.status
        and for_status.is_default_for_status
),

final as (
    select
        matched.keap_id,
        matched.customcrm_id,
        matched.link_rule,
        matched.link_rule <> 'existing' as is_new_link,
        keap.updated_at as keap_updated_at,
        customcrm.updated_at as customcrm_updated_at,
        customcrm.version as customcrm_version,
        keap.unparseable_fields as keap_unparseable_fields,
        customcrm.unparseable_fields as customcrm_unparseable_fields,
        customcrm.stage as customcrm_stage_name,
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('orders', {
            'contact': [
                'keap.keap_contact_id',
                "case when customcrm.customcrm_contact_id is null then null
                    else coalesce(contact_pairs.keap_id, 'customcrm:' || customcrm.customcrm_contact_id) end",
            ],
            'customer': [
                'keap_contacts.keap_company_id',
                "case when customcrm.customcrm_customer_id is null then null
                    else coalesce(customer_pairs.keap_id, 'customcrm:' || customcrm.customcrm_customer_id) end",
            ],
            'stage': ['keap.stage_id', 'customcrm_stages.stage_id'],
            'status': ['keap_stages.customcrm_status', 'customcrm.status'],
        }) }}
    from matched
    left join keap
        on keap.keap_opportunity_id = matched.keap_id
    left join customcrm
        on customcrm.customcrm_order_id = matched.customcrm_id
    left join keap_contacts
        on keap_contacts.keap_contact_id = keap.keap_contact_id
    left join contact_pairs
        on contact_pairs.customcrm_id = customcrm.customcrm_contact_id
    left join customer_pairs
        on customer_pairs.customcrm_id = customcrm.customcrm_customer_id
    left join customcrm_stages
        on customcrm_stages.customcrm_order_id = customcrm.customcrm_order_id
    left join stages as keap_stages
        on keap_stages.stage_id = keap.stage_id
    where not coalesce(keap.is_deleted, false)
        and not coalesce(customcrm.is_deleted, false)
        -- a side the ingest has not read yet (created by the push a moment ago) is not compared
        and (matched.keap_id is null or keap.keap_opportunity_id is not null)
        and (matched.customcrm_id is null or customcrm.customcrm_order_id is not null)
)

select * from final
