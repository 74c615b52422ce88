with

keap as (
    select
        keap_contact_id as keap_id,
        cast(null as varchar) as keap_ref,
        email,
        is_deleted
    from {{ ref('stg_keap__contacts') }}
),

customcrm as (
    select
        customcrm_contact_id as customcrm_id,
        keap_ref,
        email,
        is_deleted
    from {{ ref('stg_customcrm__contacts') }}
),

{{ match_records('contacts', 'keap', 'customcrm', [
    {'name': 'email', 'keap': 'email', 'customcrm': 'email'},
]) }}

select * from final
