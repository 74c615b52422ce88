-- The writes Customcrm needs for mapping {{ 'customers' }}: creates, merge-patch updates, deletes (when enabled).
with

{{ customcrm_changes('customers') }}

select * from final
