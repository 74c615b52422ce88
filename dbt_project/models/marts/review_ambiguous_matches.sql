-- Keap records held back because their natural key is not unique among unlinked records:
-- linking either would be a guess and creating would duplicate. Resolve by hand (edit the
-- key, or set ExternalRefs.keap on the right Customcrm record) and the next sync links them.
-- Every mapping of registry/mappings.py (orders have no natural key: never ambiguous).
with

matched as (
    select * from {{ ref('int_matched_records') }}
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
