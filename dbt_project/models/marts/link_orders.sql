-- Mapping {{ 'orders' }}: every Keap and Customcrm record once, what it is linked to, and why.
with

{{ link_table('orders', 'sync_keap__opportunities') }}

select * from final
