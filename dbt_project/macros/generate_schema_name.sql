{#- Schemas by their own names (staging, intermediate, reference, main), not prefixed
    with the target's: analysts query `main.link_contacts`, not `main_main.link_contacts`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ schema_prefix() }}{{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}


{#- On PostgreSQL, `crmsync plan` builds in a scratch copy of the schemas, each name with
    the same prefix (CRMSYNC_SCHEMA_PREFIX: support/warehouse.py); '' everywhere else. -#}
{% macro schema_prefix() -%}
    {{- env_var('CRMSYNC_SCHEMA_PREFIX', '') if target.type == 'postgres' else '' -}}
{%- endmacro %}
