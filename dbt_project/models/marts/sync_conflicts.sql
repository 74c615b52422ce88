-- Every conflict this run resolves: both values, the base, the winner and why.
with

customers as (
    select * from {{ ref('int_customers__merged') }}
),

contacts as (
    select * from {{ ref('int_contacts__merged') }}
),

orders as (
    select * from {{ ref('int_orders__merged') }}
),

products as (
    select * from {{ ref('int_products__merged') }}
),

merged as (
    select * from customers
    union all by name
    select * from contacts
    union all by name
    select * from orders
    union all by name
    select * from products
),

final as (
    select
        mapping,
        keap_id,
        customcrm_id,
        field,
        customcrm_property,
        base_value,
        keap_value,
        customcrm_value,
        keap_updated_at,
        customcrm_updated_at,
        winner,
        reason,
        merged_value
    from merged
    where is_conflict
)

select * from final
