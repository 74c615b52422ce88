{#- JSON access, dispatched so the models say what they read, not how DuckDB spells it. -#}

{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'crmsync')(column, path)) }}
{%- endmacro %}

{#- A column whose name ends in `_doc` is a parsed document (raw_records' payload_doc, an
    item of it: jsonb on PostgreSQL), read as it is; any other is JSON text or json, parsed
    for the read. -#}
{% macro default__json_text(column, path) -%}
    {%- if column.endswith('_doc') -%}
    ({{ column }} #>> '{{ "{" ~ path.split('.') | join(",") ~ "}" }}')
    {%- else -%}
    json_extract_path_text(cast({{ column }} as json), {{ "'" ~ path.split('.') | join("', '") ~ "'" }})
    {%- endif -%}
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

{% macro postgres__json_array_item(column, array_name, slot) -%}
    {%- if column.endswith('_doc') -%}
    {#- a parsed document (raw_records): its jsonb array, read without parsing the payload again -#}
    (
        select items.item
        from jsonb_array_elements(
            case when jsonb_typeof({{ column }} -> '{{ array_name }}') = 'array' then {{ column }} -> '{{ array_name }}' end
        ) with ordinality as items(item, position)
        where (items.item ->> 'field') = '{{ slot }}'
        order by items.position
        limit 1
    )
    {%- else -%}
    {{ json_array_item_by('cast(' ~ column ~ " as json) -> '" ~ array_name ~ "'", "'" ~ slot ~ "'") }}
    {%- endif -%}
{%- endmacro %}


{#- The first item of a JSON array (an SQL expression; null or not an array: none) whose
    `field` is `slot_expression`, as JSON. -#}
{% macro json_array_item_by(array_expression, slot_expression) -%}
    {{ return(adapter.dispatch('json_array_item_by', 'crmsync')(array_expression, slot_expression)) }}
{%- endmacro %}

{% macro duckdb__json_array_item_by(array_expression, slot_expression) -%}
    list_filter(
        coalesce(cast({{ array_expression }} as json[]), []::json[]),
        lambda item: (item ->> '$.field') = {{ slot_expression }}
    )[1]
{%- endmacro %}

{% macro postgres__json_array_item_by(array_expression, slot_expression) -%}
    (
        select items.item
        from json_array_elements(
            case when json_typeof({{ array_expression }}) = 'array' then {{ array_expression }} end
        ) with ordinality as items(item, position)
        where (items.item ->> 'field') = {{ slot_expression }}
        order by items.position
        limit 1
    )
{%- endmacro %}
