{#- Schemas by their own names (staging, intermediate, reference, main), not prefixed
    with the target's: analysts query `main.link_contacts`, not `main_main.link_contacts`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
