-- The PATCHes Keap needs for mapping 1 (Keap companies <- Customcrm customers).
with

{{ keap_changes('customers', 'stg_keap__companies', 'keap_company_id', {
    'name': {'kind': 'plain', 'property': 'company_name', 'json': 'text'},
    'description': {'kind': 'plain', 'property': 'notes', 'json': 'text'},
    'website': {'kind': 'plain', 'property': 'website', 'json': 'text'},
    'email': {'kind': 'object_key', 'property': 'email_address', 'key': 'email', 'json': 'text'},
    'phone': {'kind': 'object_key', 'property': 'phone_number', 'key': 'number', 'json': 'text'},
    'fax': {'kind': 'object_key', 'property': 'fax_number', 'key': 'number', 'json': 'text'},
    'street_address1': {'kind': 'object_key', 'property': 'address', 'key': 'line1', 'json': 'text'},
    'street_address2': {'kind': 'object_key', 'property': 'address', 'key': 'line2', 'json': 'text'},
    'city': {'kind': 'object_key', 'property': 'address', 'key': 'locality', 'json': 'text'},
    'zip_code': {'kind': 'object_key', 'property': 'address', 'key': 'zip', 'json': 'text'},
    'country': {'kind': 'object_key', 'property': 'address', 'key': 'country_code', 'json': 'country'},
}, create_requires=[['company_name']]) }}

select * from final
