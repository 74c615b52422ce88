-- The PATCHes Keap needs for mapping 3 (Keap opportunities <- Customcrm orders).
with

-- each field's Keap target, and what a create needs: registry/mappings.py
{{ keap_changes('orders', 'stg_keap__opportunities', 'keap_opportunity_id') }}

select * from final
