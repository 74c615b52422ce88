{#- No two rows share the combination, among the rows this build wrote (`built_in`: the
    column holding the invocation id of the build that wrote a row, as `merged_in_build`).
    Enough for an incremental table whose unique_key is part of the combination: a build
    replaces all the rows of a key it rewrites, so rows that could share a combination were
    all written by one build, and were tested by it. A build whose tests fail is followed by
    a full one (crmsync/dbt.py, `build`), which writes and tests every row again. At
    1,000,000 records per kind the whole-table test grouped 40 million field rows in every
    build; this one groups the rows of the pairs a build re-merged. -#}
{% test unique_in_build(model, combination, built_in) %}
    select {{ combination | join(', ') }}, count(*) as occurrences
    from {{ model }}
    where {{ built_in }} = '{{ invocation_id }}'
    group by {{ combination | join(', ') }}
    having count(*) > 1
{% endtest %}
