-- Keap records held back because their natural key is not unique among unlinked records:
-- linking either would be a guess and creating would duplicate. Resolve by hand (edit the
-- key, or set ExternalRefs.keap on the right Customcrm record) and the next sync links them.
-- Every mapping of registry/mappings.py (orders have no natural key: never ambiguous).
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
        natural_key,
        natural_key_value,
        customcrm_candidates
    from matched
    where link_rule = 'ambiguous'
)

select * from final
