-- The PATCHes Keap needs for mapping 1 (Keap companies <- Customcrm customers).
with

-- each field's Keap target, and what a create needs: registry/mappings.py
{{ keap_changes('customers', 'stg_keap__companies', 'keap_company_id') }}

select * from final
