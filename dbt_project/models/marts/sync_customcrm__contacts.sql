-- The writes Customcrm needs for mapping {{ 'contacts' }}: creates, merge-patch updates, deletes (when enabled).
with

{{ customcrm_changes('contacts') }}

select * from final
