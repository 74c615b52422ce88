with

{{ paired_sides('customers') }},

final as (
    select
        {{ paired_record_columns() }},
        -- keap_<field> and customcrm_<field> for every field of the registry's property table
        {{ paired_fields('customers') }}
    {{ paired_joins('customers') }}
)

select * from final
