with

rejections as (
    select * from {{ source('sync_state', 'rejections') }}
),

final as (
    select
        mapping,
        target,
        record_key,
        op,
        reason,
        field_errors,
        http_status,
        first_seen,
        last_seen,
        attempts
    from rejections
    where resolved_at is null
)

select * from final
