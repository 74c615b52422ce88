{#- The one canonical form values are compared in, on both sides (docs/specification.md):
    trimmed text with empty as null, lower-cased email, ISO alpha-2 countries, money
    as exact decimals, dates as dates, booleans as booleans. Every compared value is
    then rendered as text by `canonical_text` so one column holds any field. -#}

{% macro canon_text(expression) -%}
    nullif(trim({{ expression }}), '')
{%- endmacro %}

{% macro canon_email(expression) -%}
    lower(nullif(trim({{ expression }}), ''))
{%- endmacro %}

{#- Values that do not parse become null here, and `unparseable` names them: the merge leaves
    such a field alone (neither side is written, no base moves) and review_unparseable_values
    lists it, so one record's bad value never fails the build for everyone. -#}
{% macro canon_money(expression) -%}
    {{ try_cast_to(expression, 'decimal') }}
{%- endmacro %}

{% macro canon_date(expression) -%}
    {{ try_cast_to(expression, 'date') }}
{%- endmacro %}

{% macro canon_boolean(expression) -%}
    {{ try_cast_to(expression, 'boolean') }}
{%- endmacro %}

{#- The mapped fields whose raw value is there but did not parse: `checks` is a list of
    (field, raw expression, parsed expression). -#}
{% macro unparseable(checks) -%}
    {%- if checks -%}
    {%- set named = [] -%}
    {%- for field, raw, parsed in checks -%}
        {%- do named.append("case when (" ~ raw ~ ") is not null and (" ~ parsed ~ ") is null then '" ~ field ~ "' end") -%}
    {%- endfor -%}
    {{ text_list_without_nulls(named) }}
    {%- else -%}
    {{ empty_text_list() }}
    {%- endif -%}
{%- endmacro %}

{#- Keap timestamps come as `...Z` and as `...000+0000`; both parse to UTC. -#}
{% macro keap_timestamp(expression) -%}
    {{ return(adapter.dispatch('keap_timestamp', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro postgres__keap_timestamp(expression) -%}
    {{ try_cast_to(expression, 'timestamptz') }}
{%- endmacro %}

{% macro duckdb__keap_timestamp(expression) -%}
    try_cast(
        regexp_replace(regexp_replace({{ expression }}, 'Z$', '+00:00'), '([+-]\d\d)(\d\d)$', '\1:\2')
        as timestamptz
    )
{%- endmacro %}

{#- A canonical value as text, by its type, so values of any field compare in one column. -#}
{% macro canonical_text(expression, data_type) -%}
    {%- if data_type == 'decimal' -%} cast(cast({{ expression }} as decimal(18, 2)) as varchar)
    {%- elif data_type == 'date' -%} {{ date_text('cast(' ~ expression ~ ' as date)') }}
    {%- elif data_type == 'boolean' -%} case when {{ expression }} then 'true' when not {{ expression }} then 'false' end
    {%- else -%} cast({{ expression }} as varchar)
    {%- endif -%}
{%- endmacro %}

{#- Company names match case-folded, trimmed, with inner spaces collapsed. -#}
{% macro normalize_name(expression) -%}
    lower(regexp_replace(trim({{ expression }}), '\s+', ' ', 'g'))
{%- endmacro %}
