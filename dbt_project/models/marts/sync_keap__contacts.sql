-- The PATCHes Keap needs for mapping 2 (Keap contacts <- Customcrm contacts).
with

{{ keap_changes('contacts', 'stg_keap__contacts', 'keap_contact_id', {
    'first_name': {'kind': 'plain', 'property': 'given_name', 'json': 'text'},
    'last_name': {'kind': 'plain', 'property': 'family_name', 'json': 'text'},
    'email': {'kind': 'array_item', 'property': 'email_addresses', 'slot': 'EMAIL1', 'key': 'email', 'json': 'text'},
    'phone': {'kind': 'array_item', 'property': 'phone_numbers', 'slot': 'PHONE1', 'key': 'number', 'json': 'text'},
    'title': {'kind': 'plain', 'property': 'job_title', 'json': 'text'},
    'customer': {'kind': 'reference', 'property': 'company', 'json': 'reference'},
    'street_address1': {'kind': 'array_item', 'property': 'addresses', 'slot': 'BILLING', 'key': 'line1', 'json': 'text'},
    'street_address2': {'kind': 'array_item', 'property': 'addresses', 'slot': 'BILLING', 'key': 'line2', 'json': 'text'},
    'city': {'kind': 'array_item', 'property': 'addresses', 'slot': 'BILLING', 'key': 'locality', 'json': 'text'},
    'zip_code': {'kind': 'array_item', 'property': 'addresses', 'slot': 'BILLING', 'key': 'zip', 'json': 'text'},
    'country': {'kind': 'array_item', 'property': 'addresses', 'slot': 'BILLING', 'key': 'country_code', 'json': 'country'},
    'birth_date': {'kind': 'plain', 'property': 'birth_date', 'json': 'text'},
}, create_requires=[['email_addresses', 'phone_numbers', 'addresses']]) }}

select * from final
