-- Each server's clock against the sync's, as last measured.
with

offsets as (
    select * from {{ source('sync_state', 'clock_offsets') }}
),

ranked as (
    select
        *,
        row_number() over (partition by system order by measured_at desc, run_id desc) as recency
    from offsets
),

final as (
    select
        system,
        offset_s,
        uncertainty_s,
        measured_at
    from ranked
    where recency = 1
)

select * from final
