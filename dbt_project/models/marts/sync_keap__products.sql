-- The PATCHes Keap needs for mapping 4 (Keap products <- Customcrm products).
with

{{ keap_changes('products', 'stg_keap__products', 'keap_product_id', {
    'name': {'kind': 'plain', 'property': 'name', 'json': 'text'},
    'sku': {'kind': 'plain', 'property': 'sku', 'json': 'text'},
    'description': {'kind': 'plain', 'property': 'description', 'json': 'text'},
    'short_description': {'kind': 'plain', 'property': 'short_description', 'json': 'text'},
    'price': {'kind': 'plain', 'property': 'price', 'json': 'minor_units'},
    'active': {'kind': 'plain', 'property': 'active', 'json': 'boolean'},
}, create_requires=[['name'], ['price'], ['short_description']]) }}

select * from final
