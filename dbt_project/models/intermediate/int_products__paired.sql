with

matched as (
    -- linked and matched pairs, and Keap records to be created (no Customcrm side yet:
    -- the merge then gives every Keap value, as a value beats an empty one)
    select keap_id, customcrm_id, link_rule from {{ ref('int_products__matched') }}
    where link_rule <> 'ambiguous'
    {{ customcrm_only_pairs('products', 'stg_customcrm__products', 'customcrm_product_id') }}
),

keap as (
    select * from {{ ref('stg_keap__products') }}
),

customcrm as (
    select * from {{ ref('stg_customcrm__products') }}
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
        {{ paired_fields('products') }}
    from matched
    left join keap
        on keap.keap_product_id = matched.keap_id
    left join customcrm
        on customcrm.customcrm_product_id = matched.customcrm_id
    where not coalesce(keap.is_deleted, false)
        and not coalesce(customcrm.is_deleted, false)
        -- a side the ingest has not read yet (created by the push a moment ago) is not compared
        and (matched.keap_id is null or keap.keap_product_id is not null)
        and (matched.customcrm_id is null or customcrm.customcrm_product_id is not null)
)

select * from final
