{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='pair_key',
    on_schema_change='fail',
    post_hook=["{{ drop_stale_pairs('customers') }}", "{{ record_models_signature() }}"],
) }}

-- macros/incremental_merge.sql: which pairs a build re-merges, and why that is enough
{{ merge_model('customers') }}
