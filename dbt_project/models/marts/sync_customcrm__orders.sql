-- The writes Customcrm needs for mapping {{ 'orders' }}: creates, merge-patch updates, deletes (when enabled).
with

{{ customcrm_changes('orders') }}

select * from final
