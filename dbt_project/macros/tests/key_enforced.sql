{#- The warehouse itself refuses a second row with this key: the table has a primary key or
    a unique constraint on exactly these columns. The push's state tables are written only
    by reverse_etl/state.py, whose DDL declares their keys, so a constraint proves for every
    row, at once and whatever the table's size, what a uniqueness test would find by
    grouping all of them (at 1,000,000 records per kind the bases' test grouped 40 million
    rows in every build). Fails, naming the key, when no such constraint is in place. -#}
{% test key_enforced(model, columns) %}
    {%- set wanted = columns | map('lower') | list %}
    with key_columns as (
        select
            constraints.constraint_name,
            count(*) as key_width,
            sum(case when lower(usage.column_name) in ('{{ wanted | join("', '") }}') then 1 else 0 end) as wanted_width
        from information_schema.table_constraints as constraints
        join information_schema.key_column_usage as usage
            on usage.constraint_schema = constraints.constraint_schema
            and usage.constraint_name = constraints.constraint_name
            and usage.table_name = constraints.table_name
        where constraints.constraint_type in ('PRIMARY KEY', 'UNIQUE')
            and constraints.table_schema = '{{ model.schema }}'
            and constraints.table_name = '{{ model.identifier }}'
        group by constraints.constraint_name
    )

    select '{{ model.schema }}.{{ model.identifier }} has no primary key or unique constraint on ({{ wanted | join(", ") }})' as problem
    where not exists (
        select 1 from key_columns
        where key_width = {{ wanted | length }} and wanted_width = {{ wanted | length }}
    )
{% endtest %}
