-- Keap's stages with the Customcrm status each stands for (the editable seed stage_status):
-- Stage and Status in Customcrm, stage_id in Keap.
with

stages as (
    select * from {{ ref('stg_keap__stages') }}
),

stage_status as (
    select * from {{ ref('stage_status') }}
),

final as (
    select
        stages.stage_id,
        stages.stage_name,
        stages.stage_order,
        coalesce(stage_status.customcrm_status, 'open') as customcrm_status,
        coalesce(stage_status.is_default_for_status, false) as is_default_for_status
    from stages
    left join stage_status
        on lower(stage_status.keap_stage_name) = lower(stages.stage_name)
)

select * from final
