{#- A raw table, or an empty one of the same shape while the ingest has not created it yet
    (dlt creates a table with its first row: no deletions, no tombstones yet). The
    source() call stays either way, so the lineage shows where the data comes from. -#}
{% macro raw_exists(relation) -%}
    {#- the catalog, not dbt's relation cache: the cache need not know schemas dbt does not build -#}
    {%- set exists = true -%}
    {#- in a unit test the source is a fixture CTE (__dbt__cte__...): it exists -#}
    {%- if execute and '__dbt__cte__' not in (relation | string) -%}
        {%- set found = run_query(
            "select count(*) from information_schema.tables where table_schema = '"
            ~ relation.schema ~ "' and table_name = '" ~ relation.identifier ~ "'"
        ) -%}
        {%- set exists = found.columns[0].values()[0] > 0 -%}
    {%- endif -%}
    {{ return(exists) }}
{%- endmacro %}

{% macro raw_or_empty(source_name, table_name, empty_columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if raw_exists(relation) -%}
        select * from {{ relation }}
    {%- else -%}
        select
        {%- for name, data_type in empty_columns.items() %}
            cast(null as {{ data_type }}) as {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
        where false  -- {{ relation }} does not exist yet
    {%- endif -%}
{%- endmacro %}

{% macro raw_record_columns() -%}
    {{ return({'id': 'varchar', 'updated_at': 'varchar', '_cursor': 'timestamptz', 'payload': 'varchar', '_extracted_at': 'timestamptz'}) }}
{%- endmacro %}
