-- Mapping {{ 'contacts' }}: every Keap and Customcrm record once, what it is linked to, and why.
with

{{ link_table('contacts', 'sync_keap__contacts') }}

select * from final
