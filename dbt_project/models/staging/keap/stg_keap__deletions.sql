-- Keap records whose deletion Keap confirmed (a full pass missed them and a direct read
-- answered 404). A record marked once and then found again is live again: its row says so
-- (is_deleted false) and it is left out here.
{%- set relation = source('raw_keap', 'deletions') -%}
{%- set has_flag = true -%}
{%- if execute and raw_exists(relation) -%}
    {#- rows written before is_deleted existed were all confirmed deletions -#}
    {%- set has_flag = 'is_deleted' in (adapter.get_columns_in_relation(relation) | map(attribute='name') | list) -%}
{%- endif %}
with

source as (
    {{ raw_or_empty('raw_keap', 'deletions', {'resource': 'varchar', 'id': 'varchar', 'detected_at': 'timestamptz', 'is_deleted': 'boolean'}) }}
),

final as (
    select
        resource,
        id as keap_id,
        detected_at as deleted_at
    from source
    {%- if has_flag %}
    where coalesce(is_deleted, true)
    {%- endif %}
)

select * from final
