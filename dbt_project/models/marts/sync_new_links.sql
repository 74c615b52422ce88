-- The pairs this build matched (by ExternalRefs.keap, or a natural key unique on both
-- sides): the push records each as a link before it writes anything for it.
with

matched as (
    select * from {{ ref('int_matched_records') }}
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
