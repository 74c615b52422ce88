with

{{ paired_sides('contacts') }},

-- references compare in Keap-id space: a Customcrm customer stands for the Keap
-- company it is linked (or matched) to; an unlinked one stays itself
customer_pairs as (
    select keap_id, customcrm_id from {{ ref('int_customers__matched') }}
    where customcrm_id is not null
),

final as (
    select
        {{ paired_record_columns() }},
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('contacts', {
            'customer': [
                'keap.keap_company_id',
                "case when customcrm.customcrm_customer_id is null then null
                    else coalesce(customer_pairs.keap_id, 'customcrm:' || customcrm.customcrm_customer_id) end",
            ],
        }) }}
    {{ paired_joins('contacts', joins='
    left join customer_pairs
        on customer_pairs.customcrm_id = customcrm.customcrm_customer_id
    ') }}
)

-- the pair as one value and a hash of the whole row, which the merge compares
-- (macros/incremental_merge.sql)
select
    final.*,
    {{ pair_columns('final') }}
from final
