with

keap as (
    select
        keap_company_id as keap_id,
        cast(null as varchar) as keap_ref,
        email,
        {{ normalize_name('name') }} as normalized_name,
        is_deleted
    from {{ ref('stg_keap__companies') }}
),

customcrm as (
    select
        customcrm_customer_id as customcrm_id,
        keap_ref,
        email,
        {{ normalize_name('name') }} as normalized_name,
        is_deleted
    from {{ ref('stg_customcrm__customers') }}
),

{{ match_records('customers', 'keap', 'customcrm', [
    {'name': 'email', 'keap': 'email', 'customcrm': 'email'},
    {'name': 'company_name', 'keap': 'normalized_name', 'customcrm': 'normalized_name'},
]) }}

select * from final
