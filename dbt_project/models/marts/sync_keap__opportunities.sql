-- The PATCHes Keap needs for mapping 3 (Keap opportunities <- Customcrm orders).
with

{{ keap_changes('orders', 'stg_keap__opportunities', 'keap_opportunity_id', {
    'title': {'kind': 'plain', 'property': 'opportunity_title', 'json': 'text'},
    'contact': {'kind': 'plain', 'property': 'contact_id', 'json': 'text'},
    'stage': {'kind': 'plain', 'property': 'stage_id', 'json': 'text'},
    'amount': {'kind': 'plain', 'property': 'projected_revenue_high', 'json': 'number'},
    'close_date': {'kind': 'plain', 'property': 'estimated_close_time', 'json': 'close_time'},
    'description': {'kind': 'plain', 'property': 'opportunity_notes', 'json': 'text'},
}) }}

select * from final
