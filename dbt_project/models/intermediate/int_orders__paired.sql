with

{{ paired_sides('orders') }},

-- an opportunity's customer is its contact's company
keap_contacts as (
    select keap_contact_id, keap_company_id from {{ ref('stg_keap__contacts') }}
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
        {{ paired_record_columns() }},
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
    {{ paired_joins('orders', joins='
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
    ') }}
)

-- the pair as one value and a hash of the whole row, which the merge compares
-- (macros/incremental_merge.sql)
select
    final.*,
    {{ pair_columns('final') }}
from final
