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

{#- The whole of stg_keap__payloads and stg_customcrm__payloads: each record of `system`
    (keap or customcrm) as the system sent it (resource, <system>_id, <system>_payload), a
    view over the raw tables of the registry's resources, in JSON text. -#}
{% macro payloads_view(system) -%}
with

{% for name in registry_mappings() -%}
{%- set resource = registry_mapping(name)[system ~ '_resource'] -%}
raw_{{ resource }} as (
    {{ raw_or_empty('raw_' ~ system, resource, raw_record_columns()) }}
),

{% endfor -%}

final as (
    {%- for name in registry_mappings() %}
    {%- set resource = registry_mapping(name)[system ~ '_resource'] %}
    select '{{ resource }}' as resource, id as {{ system }}_id, payload as {{ system }}_payload
    from raw_{{ resource }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
)

select * from final
{%- endmacro %}

{% macro raw_record_columns() -%}
    {{ return({'id': 'varchar', 'updated_at': 'varchar', '_cursor': 'timestamptz', 'payload': 'varchar', '_extracted_at': 'timestamptz'}) }}
{%- endmacro %}


{#- A raw table of records (raw_or_empty), with `payload_doc`: the payload as a parsed JSON
    document, for json_text to read fields from. On DuckDB it is the payload itself (its JSON
    functions read the text quickly). On PostgreSQL it is the payload parsed once per row as
    jsonb: json_text on the text would parse the whole payload again for every field it
    reads (fifteen times per contact), which made a build there four times DuckDB's at
    30,000 records; `offset 0` keeps the planner from copying the cast into every read.
    jsonb prints a number as PostgreSQL's numeric does (1e2 as 100, where DuckDB reads the
    text as written): the mapped numbers go through canon_money and casts, which read both.
    `payload` stays the text as loaded, for what is read as it came (stg_keap__payloads,
    stg_customcrm__payloads). -#}
{% macro raw_records(source_name, table_name, unless_parsed=none) -%}
    {{ return(adapter.dispatch('raw_records', 'crmsync')(source_name, table_name, unless_parsed)) }}
{%- endmacro %}


{#- A payload's JSON text without the escapes of NUL characters (`\u0000`) that one loaded
    before the ingest dropped them may still hold: jsonb refuses a NUL anywhere in the
    document, read or not, and none may reach either system. An escape whose backslash is
    itself escaped (the six characters written as text) stays. The same on both engines,
    without a regular expression (RE2, DuckDB's, has no lookbehind): each escaped backslash
    (`\\`, read from the left as JSON reads it) is set aside as a character JSON text cannot
    hold raw (U+0001), every `\u0000` left is a NUL's escape and goes, and the backslashes
    come back. -#}
{% macro drop_nul_escapes(payload) -%}
    case
        when strpos({{ payload }}, '\u0000') = 0 then {{ payload }}
        else replace(replace(replace({{ payload }}, '\\', chr(1)), '\u0000', ''), chr(1), '\\')
    end
{%- endmacro %}


{% macro default__raw_records(source_name, table_name, unless_parsed) -%}
    select
        raw.*,
        {{ drop_nul_escapes('raw.payload') }} as payload_doc
    from (
        {{ raw_rows_to_parse(source_name, table_name, unless_parsed) }}
    ) as raw
{%- endmacro %}

{% macro postgres__raw_records(source_name, table_name, unless_parsed) -%}
    select
        raw.*,
        cast({{ drop_nul_escapes('raw.payload') }} as jsonb) as payload_doc
    from (
        {{ raw_rows_to_parse(source_name, table_name, unless_parsed) }}
    ) as raw
    offset 0
{%- endmacro %}


{#- The raw rows a staging model parses: all of them; or, in an incremental build of a
    staging table (`unless_parsed`: its id column, its resource, and the CTE its deletions
    are read from; macros/incremental_staging.sql), only the rows whose version it has not
    parsed yet, and those whose deletion state moved. Filtered here, before the payload is
    parsed. -#}
{% macro raw_rows_to_parse(source_name, table_name, unless_parsed) -%}
    {%- if unless_parsed is none or not is_incremental() %}
    {{ raw_or_empty(source_name, table_name, raw_record_columns()) }}
    {%- else %}
    select raw.*
    from (
        {{ raw_or_empty(source_name, table_name, raw_record_columns()) }}
    ) as raw
    left join {{ this }} as parsed
        on parsed.{{ unless_parsed.id }} = raw.id
        and parsed.extracted_at = raw._extracted_at
    left join (
        {{ deletion_moved(unless_parsed.id, unless_parsed.resource, unless_parsed.deletions_cte, unless_parsed.deletions_id) }}
    ) as moved
        on moved.id = raw.id
    where parsed.{{ unless_parsed.id }} is null
        or moved.id is not null
    {%- endif %}
{%- endmacro %}


{#- Ends a CTE whose columns are read many times each (a JSON item read field by field):
    on PostgreSQL `offset 0`, so the planner computes them once per row instead of copying
    their expressions into every read; nothing on DuckDB. -#}
{% macro computed_once() -%}
    {{ return(adapter.dispatch('computed_once', 'crmsync')()) }}
{%- endmacro %}

{% macro default__computed_once() -%}{%- endmacro %}

{% macro postgres__computed_once() -%}
    offset 0
{%- endmacro %}
