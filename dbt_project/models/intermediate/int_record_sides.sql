-- Every record of both systems in one shape: what the link tables show of each side.
with

keap_companies as (
    select * from {{ ref('stg_keap__companies') }}
),

customcrm_customers as (
    select * from {{ ref('stg_customcrm__customers') }}
),

keap_contacts as (
    select * from {{ ref('stg_keap__contacts') }}
),

customcrm_contacts as (
    select * from {{ ref('stg_customcrm__contacts') }}
),

keap_opportunities as (
    select * from {{ ref('stg_keap__opportunities') }}
),

customcrm_orders as (
    select * from {{ ref('stg_customcrm__orders') }}
),

keap_products as (
    select * from {{ ref('stg_keap__products') }}
),

customcrm_products as (
    select * from {{ ref('stg_customcrm__products') }}
),

final as (
    select 'customers' as mapping, 'keap' as side, keap_company_id as record_id, name as display_name,
        email as natural_key, is_deleted, deleted_at, updated_at, cast(null as integer) as version
    from keap_companies
    union all
    select 'customers', 'customcrm', customcrm_customer_id, name, email, is_deleted, deleted_at, updated_at, version
    from customcrm_customers
    union all
    select 'contacts', 'keap', keap_contact_id, nullif(trim(concat_ws(' ', first_name, last_name)), ''),
        email, is_deleted, deleted_at, updated_at, null
    from keap_contacts
    union all
    select 'contacts', 'customcrm', customcrm_contact_id, nullif(trim(concat_ws(' ', first_name, last_name)), ''),
        email, is_deleted, deleted_at, updated_at, version
    from customcrm_contacts
    union all
    select 'orders', 'keap', keap_opportunity_id, title, null, is_deleted, deleted_at, updated_at, null
    from keap_opportunities
    union all
    select 'orders', 'customcrm', customcrm_order_id, title, null, is_deleted, deleted_at, updated_at, version
    from customcrm_orders
    union all
    select 'products', 'keap', keap_product_id, name, sku, is_deleted, deleted_at, updated_at, null
    from keap_products
    union all
    select 'products', 'customcrm', customcrm_product_id, name, sku, is_deleted, deleted_at, updated_at, version
    from customcrm_products
)

select * from final
