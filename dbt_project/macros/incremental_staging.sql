{#- The record staging tables (stg_keap__companies ... stg_customcrm__products) are
    incremental: a build parses only the raw rows it has not parsed yet, and keeps every other
    record's row as the last build left it.

    A staging row is a function of its raw row (the payload as one version of the record was
    loaded), the seeds (country codes), and whether the record is deleted (Keap's confirmed
    deletions, Customcrm's tombstones). A build re-parses a record when:
    - its raw row is new or another version of it was loaded: the ingest stamps each version
      it loads with `_extracted_at`, which the staging row keeps as `extracted_at`, so a
      raw row whose id and `extracted_at` have no staging row is parsed (equality, not a
      watermark: a clock that steps back loses nothing);
    - its deletion state moved: marked deleted, marked live again, or deleted at another time,
      while its raw row stayed as it was (`deletion_moved`).
    A post-hook drops the rows of records whose raw row is gone (`drop_unloaded_records`).
    A change of the models' code or the seeds is not seen here: `crmsync` builds with
    `--full-refresh` when the project's files or the vars differ from the ones the build was
    made with (macros/incremental_merge.sql, `record_models_signature`), and so must a person
    who runs dbt by hand after such a change. A raw row edited by hand without a new
    `_extracted_at` is not re-parsed either: the ingest is the only writer of the raw tables. -#}


{#- What raw_records needs to skip what this staging table already parsed: its id column, and
    the ids whose deletion state moved since (read from the model's CTE `deletions_cte`, whose
    `deletions_id` column holds the record's id: Keap's deletions or Customcrm's tombstones). -#}
{% macro unless_parsed(id_column, resource, deletions_cte, deletions_id) -%}
    {{ return({'id': id_column, 'resource': resource, 'deletions_cte': deletions_cte, 'deletions_id': deletions_id}) }}
{%- endmacro %}


{#- The records this table holds whose deletion state is not the one the deletions CTE shows
    now (a few rows: only deleted records, and records that were). -#}
{% macro deletion_moved(id_column, resource, deletions_cte, deletions_id) -%}
    select distinct parsed.{{ id_column }} as id
    from {{ this }} as parsed
    left join {{ deletions_cte }}
        on {{ deletions_cte }}.resource = '{{ resource }}'
        and {{ deletions_cte }}.{{ deletions_id }} = parsed.{{ id_column }}
    where (parsed.is_deleted or {{ deletions_cte }}.{{ deletions_id }} is not null)
        and (
            parsed.deleted_at is distinct from {{ deletions_cte }}.deleted_at
            or parsed.is_deleted is distinct from ({{ deletions_cte }}.{{ deletions_id }} is not null)
        )
{%- endmacro %}


{#- Post-hook of a record staging table: the rows of records whose raw row is gone. -#}
{% macro drop_unloaded_records(source_name, table_name, id_column) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if raw_exists(relation) %}
    delete from {{ this }}
    where not exists (
        select 1 from {{ relation }} as raw where raw.id = {{ this }}.{{ id_column }}
    )
    {%- else %}
    delete from {{ this }}
    {%- endif %}
{%- endmacro %}
