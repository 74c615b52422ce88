-- The PATCHes Keap needs for mapping 4 (Keap products <- Customcrm products).
with

-- each field's Keap target, and what a create needs: registry/mappings.py
{{ keap_changes('products', 'stg_keap__products', 'keap_product_id') }}

select * from final
