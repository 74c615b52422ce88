with

matched as (
    -- linked and matched pairs, and Keap records to be created (no Customcrm side yet:
    -- the merge then gives every Keap value, as a value beats an empty one)
    select keap_id, customcrm_id, link_rule from {{ ref('int_customers__matched') }}
    where link_rule <> 'ambiguous'
    {{ customcrm_only_pairs('customers', 'stg_customcrm__customers', 'customcrm_customer_id') }}
),

keap as (
    select * from {{ ref('stg_keap__companies') }}
),

customcrm as (
    select * from {{ ref('stg_customcrm__customers') }}
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
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('customers') }}
    from matched
    left join keap
        on keap.keap_company_id = matched.keap_id
    left join customcrm
        on customcrm.customcrm_customer_id = matched.customcrm_id
    where not coalesce(keap.is_deleted, false)
        and not coalesce(customcrm.is_deleted, false)
        -- a side the ingest has not read yet (created by the push a moment ago) is not compared
        and (matched.keap_id is null or keap.keap_company_id is not null)
        and (matched.customcrm_id is null or customcrm.customcrm_customer_id is not null)
)

select * from final
