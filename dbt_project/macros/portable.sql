{#- The SQL that DuckDB and PostgreSQL spell differently, dispatched, so the models say what
    they compute and each engine gets its own spelling. The duckdb__ forms are the SQL the
    project always ran on DuckDB; the postgres__ forms compute the same values (the end-to-end
    tests compare the two engines' marts on the same data). PostgreSQL 15 has no try_cast
    and no merge-patch: `create_support_functions` (on-run-start) creates them in the
    schema crmsync_support. -#}


{#- A value that does not parse becomes null (canonical.sql: `unparseable` names it).
    data_type: decimal (18, 2), date, boolean, timestamptz, integer or bigint. -#}
{% macro try_cast_to(expression, data_type) -%}
    {{ return(adapter.dispatch('try_cast_to', 'crmsync')(expression, data_type)) }}
{%- endmacro %}

{% macro duckdb__try_cast_to(expression, data_type) -%}
    try_cast({{ expression }} as {{ 'decimal(18, 2)' if data_type == 'decimal' else data_type }})
{%- endmacro %}

{% macro postgres__try_cast_to(expression, data_type) -%}
    {%- if data_type == 'decimal' -%}
    cast(crmsync_support.try_decimal(cast({{ expression }} as text)) as decimal(18, 2))
    {%- else -%}
    crmsync_support.try_{{ data_type }}(cast({{ expression }} as text))
    {%- endif -%}
{%- endmacro %}


{#- An aggregate into a list (DuckDB) or an array (PostgreSQL), with nulls. -#}
{% macro agg_list(expression, order_by=none, distinct=false) -%}
    {{ return(adapter.dispatch('agg_list', 'crmsync')(expression, order_by, distinct)) }}
{%- endmacro %}

{% macro duckdb__agg_list(expression, order_by, distinct) -%}
    list({{ 'distinct ' if distinct }}{{ expression }}{{ ' order by ' ~ order_by if order_by }})
{%- endmacro %}

{% macro postgres__agg_list(expression, order_by, distinct) -%}
    array_agg({{ 'distinct ' if distinct }}{{ expression }}{{ ' order by ' ~ order_by if order_by }})
{%- endmacro %}


{#- Text ordered byte by byte on both engines (PostgreSQL's default collation would put
    'first_name' and 'firstname' in another order than DuckDB). -#}
{% macro text_order(expression) -%}
    {{ return(adapter.dispatch('text_order', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro duckdb__text_order(expression) -%}
    {{ expression }}
{%- endmacro %}

{% macro postgres__text_order(expression) -%}
    {{ expression }} collate "C"
{%- endmacro %}


{#- Some non-null value of the group (PostgreSQL 15 has no any_value). -#}
{% macro any_value_of(expression) -%}
    {{ return(adapter.dispatch('any_value_of', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro duckdb__any_value_of(expression) -%}
    any_value({{ expression }})
{%- endmacro %}

{% macro postgres__any_value_of(expression) -%}
    (array_agg({{ expression }}) filter (where {{ expression }} is not null))[1]
{%- endmacro %}


{#- An empty list of text. -#}
{% macro empty_text_list() -%}
    {{ return(adapter.dispatch('empty_text_list', 'crmsync')()) }}
{%- endmacro %}

{% macro duckdb__empty_text_list() -%}
    cast([] as varchar[])
{%- endmacro %}

{% macro postgres__empty_text_list() -%}
    cast(array[] as varchar[])
{%- endmacro %}


{#- The non-null ones of some text expressions, as a list. -#}
{% macro text_list_without_nulls(expressions) -%}
    {{ return(adapter.dispatch('text_list_without_nulls', 'crmsync')(expressions)) }}
{%- endmacro %}

{% macro duckdb__text_list_without_nulls(expressions) -%}
    list_filter([
        {%- for expression in expressions %}
        {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ], lambda field: field is not null)
{%- endmacro %}

{% macro postgres__text_list_without_nulls(expressions) -%}
    array_remove(cast(array[
        {%- for expression in expressions %}
        {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ] as varchar[]), null)
{%- endmacro %}


{#- Whether a list holds a value (null for a null list). -#}
{% macro list_has(list_expression, value) -%}
    {{ return(adapter.dispatch('list_has', 'crmsync')(list_expression, value)) }}
{%- endmacro %}

{% macro duckdb__list_has(list_expression, value) -%}
    list_contains({{ list_expression }}, {{ value }})
{%- endmacro %}

{% macro postgres__list_has(list_expression, value) -%}
    ({{ value }} = any({{ list_expression }}))
{%- endmacro %}


{#- A list of text, sorted. -#}
{% macro list_sorted(list_expression) -%}
    {{ return(adapter.dispatch('list_sorted', 'crmsync')(list_expression)) }}
{%- endmacro %}

{% macro duckdb__list_sorted(list_expression) -%}
    list_sort({{ list_expression }})
{%- endmacro %}

{% macro postgres__list_sorted(list_expression) -%}
    array(select item from unnest({{ list_expression }}) as items(item) order by item collate "C")
{%- endmacro %}


{#- Seconds since the epoch, as a double. -#}
{% macro epoch_seconds(expression) -%}
    {{ return(adapter.dispatch('epoch_seconds', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro duckdb__epoch_seconds(expression) -%}
    epoch({{ expression }})
{%- endmacro %}

{% macro postgres__epoch_seconds(expression) -%}
    cast(extract(epoch from {{ expression }}) as double precision)
{%- endmacro %}


{#- A date, or a timestamp's date in the session's time zone (UTC: crmsync sets it), as
    YYYY-MM-DD. -#}
{% macro date_text(expression) -%}
    {{ return(adapter.dispatch('date_text', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro duckdb__date_text(expression) -%}
    strftime({{ expression }}, '%Y-%m-%d')
{%- endmacro %}

{% macro postgres__date_text(expression) -%}
    to_char({{ expression }}, 'YYYY-MM-DD')
{%- endmacro %}


{#- A timestamp's time of day in UTC, as HH:MM:SS.000 (how Keap writes a close time). -#}
{% macro utc_time_text(expression) -%}
    {{ return(adapter.dispatch('utc_time_text', 'crmsync')(expression)) }}
{%- endmacro %}

{% macro duckdb__utc_time_text(expression) -%}
    strftime(timezone('UTC', {{ expression }}), '%H:%M:%S.000')
{%- endmacro %}

{% macro postgres__utc_time_text(expression) -%}
    to_char(timezone('UTC', {{ expression }}), 'HH24:MI:SS.000')
{%- endmacro %}


{#- A hash of a whole row (`relation_alias`: the row's alias in the query). -#}
{% macro row_hash(relation_alias) -%}
    {{ return(adapter.dispatch('row_hash', 'crmsync')(relation_alias)) }}
{%- endmacro %}

{% macro duckdb__row_hash(relation_alias) -%}
    hash({{ relation_alias }})
{%- endmacro %}

{% macro postgres__row_hash(relation_alias) -%}
    md5(cast({{ relation_alias }} as text))
{%- endmacro %}


{#- Two values as a JSON array's text. -#}
{% macro json_pair_text(first, second) -%}
    {{ return(adapter.dispatch('json_pair_text', 'crmsync')(first, second)) }}
{%- endmacro %}

{% macro duckdb__json_pair_text(first, second) -%}
    cast(to_json([{{ first }}, {{ second }}]) as varchar)
{%- endmacro %}

{% macro postgres__json_pair_text(first, second) -%}
    cast(json_build_array({{ first }}, {{ second }}) as varchar)
{%- endmacro %}


{#- `union all` of relations with the same columns (DuckDB matches them by name; they come
    from one macro, so PostgreSQL's match by position is the same). -#}
{% macro union_all_by_name() -%}
    {{ return(adapter.dispatch('union_all_by_name', 'crmsync')()) }}
{%- endmacro %}

{% macro duckdb__union_all_by_name() -%}
    union all by name
{%- endmacro %}

{% macro postgres__union_all_by_name() -%}
    union all
{%- endmacro %}


{#- JSON: an object of keys and values (`pairs`: key, value, key, value, ...). -#}
{% macro json_object_of(pairs) -%}
    {{ return(adapter.dispatch('json_object_of', 'crmsync')(pairs)) }}
{%- endmacro %}

{% macro duckdb__json_object_of(pairs) -%}
    json_object({{ pairs | join(', ') }})
{%- endmacro %}

{% macro postgres__json_object_of(pairs) -%}
    json_build_object({{ pairs | join(', ') }})
{%- endmacro %}


{#- JSON: the group's keys and values as one object. -#}
{% macro json_agg_object(key, value) -%}
    {{ return(adapter.dispatch('json_agg_object', 'crmsync')(key, value)) }}
{%- endmacro %}

{% macro duckdb__json_agg_object(key, value) -%}
    json_group_object({{ key }}, {{ value }})
{%- endmacro %}

{% macro postgres__json_agg_object(key, value) -%}
    json_object_agg({{ key }}, {{ value }})
{%- endmacro %}


{#- JSON: RFC 7396's merge patch (a null in the patch removes the key). -#}
{% macro json_patch(target, patch) -%}
    {{ return(adapter.dispatch('json_patch', 'crmsync')(target, patch)) }}
{%- endmacro %}

{% macro duckdb__json_patch(target, patch) -%}
    json_merge_patch({{ target }}, {{ patch }})
{%- endmacro %}

{% macro postgres__json_patch(target, patch) -%}
    crmsync_support.json_merge_patch(cast({{ target }} as json), cast({{ patch }} as json))
{%- endmacro %}


{#- JSON: the value under a key that is an SQL expression, as JSON (null when absent). -#}
{% macro json_get(column, key_expression) -%}
    {{ return(adapter.dispatch('json_get', 'crmsync')(column, key_expression)) }}
{%- endmacro %}

{% macro duckdb__json_get(column, key_expression) -%}
    json_extract({{ column }}, '$.' || {{ key_expression }})
{%- endmacro %}

{% macro postgres__json_get(column, key_expression) -%}
    (cast({{ column }} as json) -> {{ key_expression }})
{%- endmacro %}


{#- JSON: whether an object's keys are exactly `key`. -#}
{% macro json_has_only_key(column, key) -%}
    {{ return(adapter.dispatch('json_has_only_key', 'crmsync')(column, key)) }}
{%- endmacro %}

{% macro duckdb__json_has_only_key(column, key) -%}
    json_keys({{ column }}) = ['{{ key }}']
{%- endmacro %}

{% macro postgres__json_has_only_key(column, key) -%}
    (select array_agg(k) from json_object_keys(cast({{ column }} as json)) as keys(k)) = array['{{ key }}']
{%- endmacro %}


{#- A JSON aggregate's map of the group's keys to their non-null values; null when none. -#}
{% macro json_agg_object_of_non_null(key, value) -%}
    {{ return(adapter.dispatch('json_agg_object_of_non_null', 'crmsync')(key, value)) }}
{%- endmacro %}

{% macro duckdb__json_agg_object_of_non_null(key, value) -%}
    to_json(map_from_entries(
        list(({{ key }}, {{ value }})) filter (where {{ value }} is not null)
    ))
{%- endmacro %}

{% macro postgres__json_agg_object_of_non_null(key, value) -%}
    json_object_agg({{ key }}, {{ value }}) filter (where {{ value }} is not null)
{%- endmacro %}


{#- Functions PostgreSQL lacks, created by on-run-start in schema crmsync_support (nothing
    on DuckDB). They never fail: a value that does not parse is null, as with try_cast. -#}
{% macro create_support_functions() -%}
    {{ return(adapter.dispatch('create_support_functions', 'crmsync')()) }}
{%- endmacro %}

{% macro default__create_support_functions() -%}
    select 1
{%- endmacro %}

{% macro postgres__create_support_functions() -%}
-- tenants of one warehouse build at the same time: one creates or replaces, the others wait
select pg_advisory_lock(hashtext('crmsync_support'));

create schema if not exists crmsync_support;

-- DuckDB's try_cast(x as decimal(18, 2)): digits, a sign, a point, an exponent, nothing else
create or replace function crmsync_support.try_decimal(value text) returns numeric(18, 2)
language plpgsql immutable as $$
begin
    if value is null or value !~ '^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$' then
        return null;
    end if;
    return cast(cast(value as numeric) as numeric(18, 2));
exception when others then
    return null;
end $$;

-- DuckDB's try_cast(x as date): year-month-day (by - or /), anything after a T or a space
create or replace function crmsync_support.try_date(value text) returns date
language plpgsql immutable as $$
declare
    parts text[] := regexp_match(
        value, '^\s*(\d{1,4})[-/](\d{1,2})[-/](\d{1,2})([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?\s*$'
    );
begin
    if parts is null then
        return null;
    end if;
    return make_date(cast(parts[1] as integer), cast(parts[2] as integer), cast(parts[3] as integer));
exception when others then
    return null;
end $$;

-- DuckDB's try_cast(x as boolean)
create or replace function crmsync_support.try_boolean(value text) returns boolean
language sql immutable as $$
    select case
        when lower(value) in ('true', 't', 'yes', 'y', '1') then true
        when lower(value) in ('false', 'f', 'no', 'n', '0') then false
    end
$$;

-- DuckDB's try_cast(x as timestamptz): ISO 8601, a time without a zone is UTC
create or replace function crmsync_support.try_timestamptz(value text) returns timestamptz
language plpgsql immutable set timezone = 'UTC' as $$
begin
    if value is null or value !~ '^\s*\d{4}-\d{1,2}-\d{1,2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?\s*$' then
        return null;
    end if;
    return cast(value as timestamptz);
exception when others then
    return null;
end $$;

-- DuckDB's try_cast(x as bigint): a whole number in range, a fraction rounded
create or replace function crmsync_support.try_bigint(value text) returns bigint
language plpgsql immutable as $$
begin
    if value is null or value !~ '^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$' then
        return null;
    end if;
    return cast(round(cast(value as numeric)) as bigint);
exception when others then
    return null;
end $$;

-- DuckDB's try_cast(x as integer): try_bigint's number, if it fits
create or replace function crmsync_support.try_integer(value text) returns integer
language sql immutable as $$
    select case when n between -2147483648 and 2147483647 then cast(n as integer) end
    from (select crmsync_support.try_bigint(value) as n) as parsed
$$;

-- RFC 7396: the patch's keys replace the target's, a null removes one, objects merge deeply
create or replace function crmsync_support.json_merge_patch(target json, patch json) returns json
language plpgsql immutable as $$
declare
    merged jsonb;
    item record;
begin
    if patch is null then
        return target;
    end if;
    if json_typeof(patch) <> 'object' then
        return patch;
    end if;
    merged := case when json_typeof(target) = 'object' then cast(target as jsonb) else '{}'::jsonb end;
    for item in select key, value from json_each(patch) loop
        if json_typeof(item.value) = 'null' then
            merged := merged - item.key;
        else
            merged := merged || jsonb_build_object(
                item.key,
                cast(crmsync_support.json_merge_patch(cast(merged -> item.key as json), item.value) as jsonb)
            );
        end if;
    end loop;
    return cast(merged as json);
end $$;

select pg_advisory_unlock(hashtext('crmsync_support'))
{%- endmacro %}



{#- dbt-postgres reads an array column's type as `ARRAY`, which no cast takes: the unit
    tests' fixtures need the element's type (information_schema's udt_name, `_varchar`). -#}
{% macro postgres__get_columns_in_relation(relation) -%}
  {% call statement('get_columns_in_relation', fetch_result=True) %}
      select
          column_name,
          case when data_type = 'ARRAY' then substr(udt_name, 2) || '[]' else data_type end as data_type,
          character_maximum_length,
          numeric_precision,
          numeric_scale
      from {{ relation.information_schema('columns') }}
      where table_name = '{{ relation.identifier }}'
        {% if relation.schema %}
        and table_schema = '{{ relation.schema }}'
        {% endif %}
      order by ordinal_position
  {% endcall %}
  {% set table = load_result('get_columns_in_relation').table %}
  {{ return(sql_convert_columns_in_relation(table)) }}
{%- endmacro %}


{#- The unit tests write a list as DuckDB does (`[a, b]`); PostgreSQL's array is built from
    its items. -#}
{% macro postgres__safe_cast(field, type) -%}
    {%- set text = field | string -%}
    {%- if type.endswith('[]') and text.startswith("'[") and text.endswith("]'") -%}
        {%- set items = text[2:-2].split(',') | map('trim') | reject('equalto', '') | list -%}
        cast(array[{% for item in items %}'{{ item.strip("'") }}'{{ ", " if not loop.last }}{% endfor %}] as {{ type }})
    {%- else -%}
        cast({{ field }} as {{ type }})
    {%- endif -%}
{%- endmacro %}


{#- Fresh planner statistics on PostgreSQL. A table that dlt just loaded or dbt just
    created has none until autovacuum's next pass, a minute or more later: the planner then
    guesses a few rows for a table of thousands, and picks nested loops that rescan a join
    once per row (the matching models' natural keys went quadratic in the unlinked records,
    bench/RESULTS.md, issue 18). So the sources are analyzed before a build
    (`analyze_sources`, on-run-start) and every table or incremental model right after it
    is built (`analyze_built`, a post-hook of every model and seed). DuckDB keeps its
    statistics as it writes: both are no-ops there. -#}
{% macro analyze_sources() -%}
    {{ return(adapter.dispatch('analyze_sources', 'crmsync')()) }}
{%- endmacro %}

{% macro default__analyze_sources() -%}
{%- endmacro %}

{% macro postgres__analyze_sources() -%}
    {%- set names = [] -%}
    {%- if execute -%}
        {%- for node in graph.sources.values() -%}
            {%- do names.append("array['" ~ node.schema ~ "', '" ~ node.identifier ~ "']") -%}
        {%- endfor -%}
    {%- endif -%}
do $$
declare
    name text[];
begin
    foreach name slice 1 in array array[{{ names | join(', ') }}]::text[][] loop
        -- a source not loaded yet (a first run before any extract) has nothing to analyze
        if to_regclass(format('%I.%I', name[1], name[2])) is not null then
            execute format('analyze %I.%I', name[1], name[2]);
        end if;
    end loop;
end $$
{%- endmacro %}

{% macro analyze_built() -%}
    {{ return(adapter.dispatch('analyze_built', 'crmsync')()) }}
{%- endmacro %}

{#- empty: dbt runs no statement for a hook that renders to nothing -#}
{% macro default__analyze_built() -%}
{%- endmacro %}

{% macro postgres__analyze_built() -%}
    {%- if config.get('materialized') in ('table', 'incremental', 'seed') -%}
    analyze {{ this }}
    {%- endif -%}
{%- endmacro %}
