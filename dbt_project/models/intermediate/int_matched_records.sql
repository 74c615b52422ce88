-- Every mapping's link rules in one relation (the mappings of registry/mappings.py): what
-- the push's new links and the review of ambiguous keys read.
with

matched as (
    {%- for mapping in registry_mappings() %}
    select * from {{ ref('int_' ~ mapping ~ '__matched') }}
    {%- if not loop.last %}
    {{ union_all_by_name() }}
    {%- endif %}
    {%- endfor %}
),

final as (
    select * from matched
)

select * from final
