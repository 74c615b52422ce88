-- The writes Customcrm needs for mapping {{ 'products' }}: creates, merge-patch updates, deletes (when enabled).
with

{{ customcrm_changes('products') }}

select * from final
