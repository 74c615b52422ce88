with

{{ paired_sides('products') }},

final as (
    select
        {{ paired_record_columns() }},
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('products') }}
    {{ paired_joins('products') }}
)

select * from final
