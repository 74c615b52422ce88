{#- JSON access, dispatched so the models say what they read, not how DuckDB spells it. -#}

{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'crmsync')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    json_extract_path_text({{ column }}, {{ "'" ~ path.split('.') | join("', '") ~ "'" }})
{%- endmacro %}

{% macro duckdb__json_text(column, path) -%}
    ({{ column }} ->> '$.{{ path }}')
{%- endmacro %}


{#- The item of a Keap array whose `field` is `slot` (EMAIL1, PHONE1, BILLING), as JSON. -#}
{% macro json_array_item(column, array_name, slot) -%}
    {{ return(adapter.dispatch('json_array_item', 'crmsync')(column, array_name, slot)) }}
{%- endmacro %}

{% macro duckdb__json_array_item(column, array_name, slot) -%}
    list_filter(
        coalesce(json_extract({{ column }}, '$.{{ array_name }}[*]'), []::json[]),
        lambda item: (item ->> '$.field') = '{{ slot }}'
    )[1]
{%- endmacro %}


{#- The array without the item for `slot`, and with `new_item` (JSON, may be null) in front:
    what a Keap PATCH must send so that the other items survive. -#}
{% macro json_array_replace_item(column, array_name, slot, new_item) -%}
    {{ return(adapter.dispatch('json_array_replace_item', 'crmsync')(column, array_name, slot, new_item)) }}
{%- endmacro %}

{% macro duckdb__json_array_replace_item(column, array_name, slot, new_item) -%}
    to_json(list_concat(
        case when {{ new_item }} is null then []::json[] else [{{ new_item }}::json] end,
        list_filter(
            coalesce(json_extract({{ column }}, '$.{{ array_name }}[*]'), []::json[]),
            lambda item: (item ->> '$.field') is distinct from '{{ slot }}'
        )
    ))
{%- endmacro %}
