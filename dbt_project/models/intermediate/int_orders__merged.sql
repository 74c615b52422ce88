with

paired as (
    select * from {{ ref('int_orders__paired') }}
),

compared as (
    {{ unpivot_fields('orders', 'paired', mapping_fields('orders')) }}
),

{{ three_way_merge('orders', 'compared') }}

select * from merged
