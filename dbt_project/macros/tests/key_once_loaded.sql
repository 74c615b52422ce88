{#- A raw table's key: never null, never twice. The ingest creates a raw table with its
    first record, so a system that holds none yet (a new, empty Customcrm) has no table:
    then there is nothing to test, and staging reads it as empty (raw_or_empty). -#}
{% test key_once_loaded(model, column_name) %}
    {%- if raw_exists(model) %}
    select {{ column_name }}, count(*) as occurrences
    from {{ model }}
    group by {{ column_name }}
    having {{ column_name }} is null or count(*) > 1
    {%- else %}
    select null as {{ column_name }}, 0 as occurrences
    where false  -- {{ model }} does not exist yet
    {%- endif %}
{% endtest %}
