-- The pairs this build matched (by ExternalRefs.keap, or a natural key unique on both
-- sides): the push records each as a link before it writes anything for it.
with

matched as (
    {%- for mapping in registry_mappings() %}
    select * from {{ ref('int_' ~ mapping ~ '__matched') }}
    {%- if not loop.last %}
    union all by name
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        mapping,
        keap_id,
        customcrm_id,
        link_rule
    from matched
    where link_rule in ('external_ref', 'natural_key')
)

select * from final
