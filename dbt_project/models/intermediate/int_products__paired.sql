with

{{ paired_sides('products') }},

final as (
    select
        {{ paired_record_columns() }},
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('products') }}
    {{ paired_joins('products') }}
)

-- the pair as one value and a hash of the whole row, which the merge compares
-- (macros/incremental_merge.sql)
select
    final.*,
    {{ pair_columns('final') }}
from final
