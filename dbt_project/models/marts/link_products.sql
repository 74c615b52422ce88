-- Mapping {{ 'products' }}: every Keap and Customcrm record once, what it is linked to, and why.
with

{{ link_table('products', 'sync_keap__products') }}

select * from final
