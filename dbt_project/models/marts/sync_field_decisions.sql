{{ config(materialized='view') }}

-- Per linked pair and field, the merged value and where it must be written. The push
-- advances a field's base to merged_value once the write carrying it went through (or
-- at once when nothing needs writing).
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
        merged_value,
        base_value,
        has_base,
        case
            when keap_value is not distinct from customcrm_value then 'none'
            when winner = 'keap' then 'customcrm'
            else 'keap'
        end as write_to,
        is_conflict
    from merged
)

select * from final
