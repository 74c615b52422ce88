{#- Among the rows this build wrote, each key has exactly one row with `flag` true (as
    `is_first_of_pair`, the row an incremental build reads a pair's hash from: a pair with
    none would be re-merged in every build, one with two read twice). `built_in`: as in
    unique_in_build, whose reasoning holds here too: a build rewrites all the rows of a key. -#}
{% test one_flagged_in_build(model, key, flag, built_in) %}
    select {{ key }}, count(*) filter (where {{ flag }}) as flagged
    from {{ model }}
    where {{ built_in }} = '{{ invocation_id }}'
    group by {{ key }}
    having count(*) filter (where {{ flag }}) <> 1
{% endtest %}
