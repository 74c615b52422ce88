with

paired as (
    select * from {{ ref('int_contacts__paired') }}
),

compared as (
    {{ unpivot_fields('contacts', 'paired', mapping_fields('contacts')) }}
),

{{ three_way_merge('contacts', 'compared') }}

select * from merged
