{{ config(materialized='view') }}

-- Every mapping's merge in one relation (the mappings of registry/mappings.py): what the
-- conflict list and the push's base bookkeeping read.
with

{% for mapping in registry_mappings() %}
{{ mapping }} as (
    select * from {{ ref('int_' ~ mapping ~ '__merged') }}
),

{% endfor %}
final as (
    {%- for mapping in registry_mappings() %}
    select * from {{ mapping }}
    {%- if not loop.last %}
    {{ union_all_by_name() }}
    {%- endif %}
    {%- endfor %}
)

select * from final
