-- Each Customcrm record as Customcrm sent it, where it is read as it came (review_unparseable_values shows it).
-- A view over the raw tables: the staging tables of records keep no copy of a payload.
-- JSON text: a reader casts it after its join, so only the records it reads are parsed.
with

{% for name in registry_mappings() -%}
{%- set m = registry_mapping(name) -%}
raw_{{ m.customcrm_resource }} as (
    {{ raw_or_empty('raw_customcrm', m.customcrm_resource, raw_record_columns()) }}
),

{% endfor -%}

final as (
    {%- for name in registry_mappings() %}
    {%- set m = registry_mapping(name) %}
    select '{{ m.customcrm_resource }}' as resource, id as customcrm_id, payload as customcrm_payload
    from raw_{{ m.customcrm_resource }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
)

select * from final
