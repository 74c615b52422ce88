-- Each Customcrm record as Customcrm sent it, where it is read as it came (review_unparseable_values shows it).
-- A view over the raw tables: the staging tables of records keep no copy of a payload.
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
    select '{{ m.customcrm_resource }}' as resource, id as customcrm_id, cast(payload as json) as customcrm_payload
    from raw_{{ m.customcrm_resource }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
)

select * from final
