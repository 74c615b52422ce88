with

source as (
    {{ raw_or_empty('raw_keap', 'stages', raw_record_columns()) }}
),

final as (
    select
        id as stage_id,
        {{ canon_text(json_text('payload', 'name')) }} as stage_name,
        cast({{ json_text('payload', 'order') }} as integer) as stage_order,
        {{ try_cast_to(json_text('payload', 'probability'), 'integer') }} as stage_probability
    from source
)

select * from final
