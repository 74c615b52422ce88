{#- JSON access, dispatched so the models say what they read, not how DuckDB spells it. -#}

{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'crmsync')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    json_extract_path_text(cast({{ column }} as json), {{ "'" ~ path.split('.') | join("', '") ~ "'" }})
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
    {{ json_array_item_by('cast(' ~ column ~ " as json) -> '" ~ array_name ~ "'", "'" ~ slot ~ "'") }}
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
