{#- Every Customcrm status that some Keap stage stands for has exactly one default stage:
    the one an order's Status picks when its Stage names no Keap stage. -#}
{% test one_default_stage_per_status(model) %}
    select customcrm_status, count(*) filter (where is_default_for_status) as defaults
    from {{ model }}
    group by customcrm_status
    having count(*) filter (where is_default_for_status) <> 1
{% endtest %}
