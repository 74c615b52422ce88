with

paired as (
    select * from {{ ref('int_customers__paired') }}
),

compared as (
    {{ unpivot_fields('customers', 'paired', mapping_fields('customers')) }}
),

{{ three_way_merge('customers', 'compared') }}

select * from merged
