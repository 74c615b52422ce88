with

base_values as (
    select * from {{ source('sync_state', 'base_values') }}
),

final as (
    select
        mapping,
        keap_id,
        field,
        value,
        synced_at
    from base_values
)

select * from final
