{#- The merge is incremental: a build re-merges only the pairs whose inputs may have changed,
    and keeps every other pair's rows as the last build left them.

    A pair's rows are a function of its paired row (both records' values, update times,
    what does not parse, whether the link is new, the references as translated), its base
    values, the clocks, the property table and the policy. A build re-merges a pair when:
    - its paired row is new or differs from the one its rows were merged from: a hash of the
      whole record (`pair_hash`) is compared before any field is;
    - it is not settled: some field differs between the sides or from its base, or has no
      base. Only such pairs can be written, so only their bases can move (the push advances
      the bases of the fields it wrote or confirmed), and only their winners can depend on
      the clocks (equal values decide nothing: `customcrm_is_newer` is null on them);
    - a base of it was written after the last build (`base_watermark`), whoever wrote it.
    A post-hook drops the rows of pairs that are gone (a record deleted, a link replaced) or
    whose record changed. A change of the property table, the policy or the models' code is
    not seen here: `crmsync` builds with `--full-refresh` when the project's files or the
    vars differ from the ones the merge was built with (the signature each merge table keeps
    as its comment: `record_models_signature`), and so must a person who runs dbt by hand
    after such a change. -#}


{#- Which pair a row belongs to: unambiguous, and never null (either side may be). -#}
{% macro pair_key(keap_id, customcrm_id) -%}
    {{ json_pair_text(keap_id, customcrm_id) }}
{%- endmacro %}


{#- The last columns of a paired model (int_<mapping>__paired): pair_key, and pair_hash, the
    hash of the whole row (`relation_alias`: the row without these two). Computed once, in
    the paired model, and read by the merge and its post-hook. -#}
{% macro pair_columns(relation_alias) -%}
    {{ pair_key(relation_alias ~ '.keap_id', relation_alias ~ '.customcrm_id') }} as pair_key,
    {{ row_hash(relation_alias) }} as pair_hash
{%- endmacro %}


{#- The pairs this build merges: all of them in a full build; in an incremental one, those
    whose record changed, that are not settled, or whose base moved since the last build. -#}
{% macro pairs_to_merge(mapping) -%}
    {%- set paired_model = 'int_' ~ mapping ~ '__paired' %}
    {%- if is_incremental() %}
    -- the keys first, the whole rows last: the three joins below hash and carry only these
    -- columns, and only the pairs chosen are read whole (none when nothing changed)
    with keyed as (
        select pair_key, pair_hash, keap_id
        from {{ ref(paired_model) }}
    ),

    -- each pair merged before, from its first row: a filter, not a grouping of every row
    merged_before as (
        select pair_key, pair_hash
        from {{ this }}
        where is_first_of_pair
    ),

    -- the pairs with a field that differs between the sides or from its base, or has none
    unsettled as (
        select distinct pair_key
        from {{ this }}
        where not (has_base and keap_value is not distinct from customcrm_value
            and base_value is not distinct from keap_value)
    ),

    bases_moved as (
        select distinct keap_id
        from {{ ref('stg_sync_state__base_values') }}
        where mapping = '{{ mapping }}'
            and synced_at > (select coalesce(max(base_watermark), '-infinity'::timestamptz) from {{ this }})
    ),

    -- bases_moved by a join, not `in (select ...)` under the `or`: PostgreSQL runs that as a
    -- scan of the list per pair once the list outgrows work_mem (after a large push)
    chosen as (
        select keyed.pair_key
        from keyed
        left join merged_before
            on merged_before.pair_key = keyed.pair_key
        left join unsettled
            on unsettled.pair_key = keyed.pair_key
        left join bases_moved
            on bases_moved.keap_id = keyed.keap_id
        where merged_before.pair_key is null
            or merged_before.pair_hash <> keyed.pair_hash
            or unsettled.pair_key is not null
            or bases_moved.keap_id is not null
    )

    select paired.*
    from {{ ref(paired_model) }} as paired
    where paired.pair_key in (select chosen.pair_key from chosen)
    {%- else %}
    select * from {{ ref(paired_model) }}
    {%- endif %}
{%- endmacro %}


{#- Post-hook of a merge model: the rows of pairs that no longer exist as they were merged. -#}
{% macro drop_stale_pairs(mapping) -%}
    delete from {{ this }}
    where not exists (
        select 1
        from {{ ref('int_' ~ mapping ~ '__paired') }} as current_pairs
        where current_pairs.pair_key = {{ this }}.pair_key
            and current_pairs.pair_hash = {{ this }}.pair_hash
    )
{%- endmacro %}


{#- Post-hook of a merge model: the signature it was built with, as the table's comment,
    where `crmsync` reads it (crmsync/dbt.py) even when the table has no row. -#}
{% macro record_models_signature() -%}
    comment on table {{ this }} is '{{ var("models_signature", "") }}'
{%- endmacro %}


{#- The whole of a merge model (int_<mapping>__merged): the pairs to merge, one row per field,
    the three-way merge, and what the next build needs to know what to redo. -#}
{% macro merge_model(mapping) %}
with

paired as (
    {{ pairs_to_merge(mapping) }}
),

compared as (
    {{ unpivot_fields(mapping, 'paired', mapping_fields(mapping)) }}
),

{{ three_way_merge(mapping, 'compared') }}

select
    *,
    -- the newest base this build could see: bases written later are re-merged by the next
    (select max(synced_at) from {{ ref('stg_sync_state__base_values') }}) as base_watermark,
    '{{ invocation_id }}' as merged_in_build
from merged
{% endmacro %}
