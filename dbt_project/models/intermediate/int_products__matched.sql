with

keap as (
    select
        keap_product_id as keap_id,
        cast(null as varchar) as keap_ref,
        sku,
        is_deleted
    from {{ ref('stg_keap__products') }}
),

customcrm as (
    select
        customcrm_product_id as customcrm_id,
        keap_ref,
        sku,
        is_deleted
    from {{ ref('stg_customcrm__products') }}
),

{{ match_records('products', 'keap', 'customcrm', [
    {'name': 'sku', 'keap': 'sku', 'customcrm': 'sku'},
]) }}

select * from final
