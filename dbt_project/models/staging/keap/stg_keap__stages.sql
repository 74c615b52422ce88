with

source as (
    {{ raw_records('raw_keap', 'stages') }}
),

final as (
    select
        id as stage_id,
        {{ canon_text(json_text('payload_doc', 'name')) }} as stage_name,
        cast({{ json_text('payload_doc', 'order') }} as integer) as stage_order,
        {{ try_cast_to(json_text('payload_doc', 'probability'), 'integer') }} as stage_probability
    from source
)

select * from final
