with

links as (
    select * from {{ source('sync_state', 'links') }}
),

final as (
    select
        mapping,
        keap_id,
        customcrm_id,
        link_rule,
        linked_at,
        linked_in_run,
        last_synced_at
    from links
)

select * from final
