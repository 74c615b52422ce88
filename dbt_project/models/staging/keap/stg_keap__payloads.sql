-- Each Keap record as Keap sent it, where it is read as it came (the body of a Keap PATCH starts from it, so nothing
-- unmapped is lost; review_unparseable_values shows it).
-- A view over the raw tables: the staging tables of records keep no copy of a payload.
-- JSON text: a reader casts it after its join, so only the records it reads are parsed.
with

{% for name in registry_mappings() -%}
{%- set m = registry_mapping(name) -%}
raw_{{ m.keap_resource }} as (
    {{ raw_or_empty('raw_keap', m.keap_resource, raw_record_columns()) }}
),

{% endfor -%}

final as (
    {%- for name in registry_mappings() %}
    {%- set m = registry_mapping(name) %}
    select '{{ m.keap_resource }}' as resource, id as keap_id, payload as keap_payload
    from raw_{{ m.keap_resource }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
)

select * from final
