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
        attempts,
        retry_after,
        ignored_at is not null as is_ignored,
        ignored_by,
        ignore_reason
    from rejections
    where resolved_at is null
)

select * from final
