-- Mapping {{ 'customers' }}: every Keap and Customcrm record once, what it is linked to, and why.
with

{{ link_table('customers', 'sync_keap__companies') }}

select * from final
