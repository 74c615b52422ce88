{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='customcrm_order_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_customcrm', 'orders', 'customcrm_order_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

tombstones as (
    {{ raw_or_empty('raw_customcrm', 'tombstones', {'resource': 'varchar', 'id': 'varchar', 'deleted_at': 'timestamptz', 'updated_at': 'timestamptz', 'external_refs': 'varchar', '_extracted_at': 'timestamptz'}) }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_customcrm', 'orders', unless_parsed('customcrm_order_id', 'orders', 'tombstones', 'id')) }}
),

records as (
    select
        id as customcrm_order_id,
        {{ canon_text(json_text('payload_doc', 'Title')) }} as title,
        {{ canon_text(json_text('payload_doc', 'ContactId')) }} as customcrm_contact_id,
        {{ canon_text(json_text('payload_doc', 'CustomerId')) }} as customcrm_customer_id,
        lower({{ canon_text(json_text('payload_doc', 'Status')) }}) as status,
        {{ canon_text(json_text('payload_doc', 'Stage')) }} as stage,
        {{ canon_money(canon_text(json_text('payload_doc', 'Amount'))) }} as amount,
        upper({{ canon_text(json_text('payload_doc', 'Currency')) }}) as currency,
        {{ canon_date(canon_text(json_text('payload_doc', 'CloseDate'))) }} as close_date,
        {{ canon_text(json_text('payload_doc', 'Description')) }} as description,
        {{ canon_text(json_text('payload_doc', 'ExternalRefs.keap')) }} as keap_ref,
        {{ try_cast_to(json_text('payload_doc', 'Version'), 'integer') }} as version,
        {{ try_cast_to(json_text('payload_doc', 'UpdatedAt'), 'timestamptz') }} as updated_at,
        -- a value sent that does not parse (macros/canonical.sql)
        {{ unparseable([
            ('amount', canon_text(json_text('payload_doc', 'Amount')), canon_money(canon_text(json_text('payload_doc', 'Amount')))),
            ('close_date', canon_text(json_text('payload_doc', 'CloseDate')), canon_date(canon_text(json_text('payload_doc', 'CloseDate')))),
        ]) }} as unparseable_fields,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        records.*,
        tombstones.deleted_at,
        tombstones.id is not null as is_deleted,
        '{{ invocation_id }}' as parsed_in_build
    from records
    left join tombstones
        on tombstones.resource = 'orders'
        and tombstones.id = records.customcrm_order_id
)

select * from final
