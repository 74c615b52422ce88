{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='customcrm_product_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_customcrm', 'products', 'customcrm_product_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

tombstones as (
    {{ raw_or_empty('raw_customcrm', 'tombstones', {'resource': 'varchar', 'id': 'varchar', 'deleted_at': 'timestamptz', 'updated_at': 'timestamptz', 'external_refs': 'varchar', '_extracted_at': 'timestamptz'}) }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_customcrm', 'products', unless_parsed('customcrm_product_id', 'products', 'tombstones', 'id')) }}
),

records as (
    select
        id as customcrm_product_id,
        {{ canon_text(json_text('payload_doc', 'Name')) }} as name,
        {{ canon_text(json_text('payload_doc', 'Sku')) }} as sku,
        {{ canon_text(json_text('payload_doc', 'Description')) }} as description,
        {{ canon_text(json_text('payload_doc', 'ShortDescription')) }} as short_description,
        {{ canon_money(canon_text(json_text('payload_doc', 'Price'))) }} as price,
        upper({{ canon_text(json_text('payload_doc', 'Currency')) }}) as currency,
        {{ canon_boolean(json_text('payload_doc', 'Active')) }} as active,
        {{ canon_text(json_text('payload_doc', 'ExternalRefs.keap')) }} as keap_ref,
        {{ try_cast_to(json_text('payload_doc', 'Version'), 'integer') }} as version,
        {{ try_cast_to(json_text('payload_doc', 'UpdatedAt'), 'timestamptz') }} as updated_at,
        -- a value sent that does not parse (macros/canonical.sql)
        {{ unparseable([
            ('price', canon_text(json_text('payload_doc', 'Price')), canon_money(canon_text(json_text('payload_doc', 'Price')))),
            ('active', canon_text(json_text('payload_doc', 'Active')), canon_boolean(json_text('payload_doc', 'Active'))),
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
        on tombstones.resource = 'products'
        and tombstones.id = records.customcrm_product_id
)

select * from final
