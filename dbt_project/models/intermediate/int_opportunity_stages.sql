-- Keap's stages with the Customcrm status each stands for: the editable seed stage_status
-- when it names the stage, else the stage's win probability (100 won, 0 lost, else open),
-- so that an account whose stages are named otherwise ("Won", "Lost") still maps.
with

stages as (
    select * from {{ ref('stg_keap__stages') }}
),

stage_status as (
    select * from {{ ref('stage_status') }}
),

classified as (
    select
        stages.stage_id,
        stages.stage_name,
        stages.stage_order,
        stages.stage_probability,
        coalesce(
            stage_status.customcrm_status,
            case
                when stages.stage_probability >= 100 then 'won'
                when stages.stage_probability = 0 then 'lost'
                else 'open'
            end
        ) as customcrm_status,
        case
            when stage_status.customcrm_status is not null then 'seed'
            when stages.stage_probability is not null then 'probability'
            else 'no probability: open'
        end as status_source,
        coalesce(stage_status.is_default_for_status, false) as seed_default
    from stages
    left join stage_status
        on lower(stage_status.keap_stage_name) = lower(stages.stage_name)
),

-- one stage per status is the one a Customcrm Status picks when its Stage names no Keap
-- stage: the seed's default, else the first such stage of the pipeline
ranked as (
    select
        *,
        row_number() over (
            partition by customcrm_status
            order by seed_default desc, stage_order, stage_id
        ) as rank_for_status
    from classified
),

final as (
    select
        stage_id,
        stage_name,
        stage_order,
        stage_probability,
        customcrm_status,
        status_source,
        rank_for_status = 1 as is_default_for_status
    from ranked
)

select * from final
