-- How far the extract has read each Keap resource: the newest update time it loaded.
-- Before each chunk of Keap writes the push re-reads what Keap changed after this mark
-- (reverse_etl/keap_watch.py) and holds back what was edited meanwhile.
with

marks as (
    {%- for mapping in registry_mappings() %}
    {%- set resource = registry_mapping(mapping)['keap_resource'] %}
    select '{{ resource }}' as resource, max(_cursor) as read_up_to
    from (
        {{ raw_or_empty('raw_keap', resource, raw_record_columns()) }}
    ) as raw_records
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        resource,
        read_up_to
    from marks
)

select * from final
