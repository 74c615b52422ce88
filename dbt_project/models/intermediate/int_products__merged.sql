with

paired as (
    select * from {{ ref('int_products__paired') }}
),

compared as (
    {{ unpivot_fields('products', 'paired', mapping_fields('products')) }}
),

{{ three_way_merge('products', 'compared') }}

select * from merged
