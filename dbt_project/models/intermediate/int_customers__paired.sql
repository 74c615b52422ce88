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
        keap.name as keap_name,
        customcrm.name as customcrm_name,
        keap.description as keap_description,
        customcrm.description as customcrm_description,
        keap.website as keap_website,
        customcrm.website as customcrm_website,
        keap.email as keap_email,
        customcrm.email as customcrm_email,
        keap.phone as keap_phone,
        customcrm.phone as customcrm_phone,
        keap.fax as keap_fax,
        customcrm.fax as customcrm_fax,
        keap.street_address1 as keap_street_address1,
        customcrm.street_address1 as customcrm_street_address1,
        keap.street_address2 as keap_street_address2,
        customcrm.street_address2 as customcrm_street_address2,
        keap.city as keap_city,
        customcrm.city as customcrm_city,
        keap.zip_code as keap_zip_code,
        customcrm.zip_code as customcrm_zip_code,
        keap.country as keap_country,
        customcrm.country as customcrm_country
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
