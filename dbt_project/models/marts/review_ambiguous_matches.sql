-- Keap records held back because their natural key is not unique among unlinked records:
-- linking either would be a guess and creating would duplicate. Resolve by hand (edit the
-- key, or set ExternalRefs.keap on the right Customcrm record) and the next sync links them.
with

customers as (
    select * from {{ ref('int_customers__matched') }}
),

contacts as (
    select * from {{ ref('int_contacts__matched') }}
),

products as (
    select * from {{ ref('int_products__matched') }}
),

matched as (
    select * from customers
    union all
    select * from contacts
    union all
    select * from products
),

final as (
    select
        mapping,
        keap_id,
        natural_key,
        natural_key_value,
        customcrm_candidates
    from matched
    where link_rule = 'ambiguous'
)

select * from final
