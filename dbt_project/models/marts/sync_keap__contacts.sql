-- The PATCHes Keap needs for mapping 2 (Keap contacts <- Customcrm contacts).
with

-- each field's Keap target, and what a create needs: registry/mappings.py
{{ keap_changes('contacts', 'stg_keap__contacts', 'keap_contact_id') }}

select * from final
