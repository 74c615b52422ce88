-- Every conflict this run resolves: both values, the base, the winner and why.
with

merged as (
    select * from {{ ref('int_merged_fields') }}
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
