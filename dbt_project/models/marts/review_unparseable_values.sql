-- Mapped values that do not parse (a date like 1980-02-30, an amount that is not a number, a
-- country code the table does not know): the merge leaves each such field alone on that
-- pair (nothing is written, its base stays) until the value is fixed in the system it
-- came from. The rest of the record, and every other record, syncs as usual.
with

keap_companies as (
    select 'keap' as system, 'companies' as resource, keap_company_id as record_id, unparseable_fields, keap_payload as record
    from {{ ref('stg_keap__companies') }}
),

keap_contacts as (
    select 'keap' as system, 'contacts' as resource, keap_contact_id as record_id, unparseable_fields, keap_payload as record
    from {{ ref('stg_keap__contacts') }}
),

keap_opportunities as (
    select 'keap' as system, 'opportunities' as resource, keap_opportunity_id as record_id, unparseable_fields, keap_payload as record
    from {{ ref('stg_keap__opportunities') }}
),

keap_products as (
    select 'keap' as system, 'products' as resource, keap_product_id as record_id, unparseable_fields, keap_payload as record
    from {{ ref('stg_keap__products') }}
),

customcrm_customers as (
    select 'customcrm' as system, 'customers' as resource, customcrm_customer_id as record_id, unparseable_fields, customcrm_payload as record
    from {{ ref('stg_customcrm__customers') }}
),

customcrm_contacts as (
    select 'customcrm' as system, 'contacts' as resource, customcrm_contact_id as record_id, unparseable_fields, customcrm_payload as record
    from {{ ref('stg_customcrm__contacts') }}
),

customcrm_orders as (
    select 'customcrm' as system, 'orders' as resource, customcrm_order_id as record_id, unparseable_fields, customcrm_payload as record
    from {{ ref('stg_customcrm__orders') }}
),

customcrm_products as (
    select 'customcrm' as system, 'products' as resource, customcrm_product_id as record_id, unparseable_fields, customcrm_payload as record
    from {{ ref('stg_customcrm__products') }}
),

records as (
    select * from keap_companies
    union all
    select * from keap_contacts
    union all
    select * from keap_opportunities
    union all
    select * from keap_products
    union all
    select * from customcrm_customers
    union all
    select * from customcrm_contacts
    union all
    select * from customcrm_orders
    union all
    select * from customcrm_products
),

final as (
    select
        system,
        resource,
        record_id,
        unnest(unparseable_fields) as field,
        record
    from records
    where len(unparseable_fields) > 0
)

select * from final
