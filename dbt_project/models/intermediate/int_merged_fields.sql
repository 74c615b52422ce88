-- The four mappings' merges in one relation: what the conflict list and the push's
-- base bookkeeping read.
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

final as (
    select * from customers
    union all by name
    select * from contacts
    union all by name
    select * from orders
    union all by name
    select * from products
)

select * from final
