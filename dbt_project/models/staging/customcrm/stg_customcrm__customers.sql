{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='customcrm_customer_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_customcrm', 'customers', 'customcrm_customer_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

tombstones as (
    {{ raw_or_empty('raw_customcrm', 'tombstones', {'resource': 'varchar', 'id': 'varchar', 'deleted_at': 'timestamptz', 'updated_at': 'timestamptz', 'external_refs': 'varchar', '_extracted_at': 'timestamptz'}) }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_customcrm', 'customers', unless_parsed('customcrm_customer_id', 'customers', 'tombstones', 'id')) }}
),

records as (
    select
        id as customcrm_customer_id,
        {{ canon_text(json_text('payload_doc', 'Name')) }} as name,
        {{ canon_text(json_text('payload_doc', 'Description')) }} as description,
        {{ canon_text(json_text('payload_doc', 'Website')) }} as website,
        {{ canon_email(json_text('payload_doc', 'Email')) }} as email,
        {{ canon_text(json_text('payload_doc', 'Phone')) }} as phone,
        {{ canon_text(json_text('payload_doc', 'Fax')) }} as fax,
        {{ canon_text(json_text('payload_doc', 'StreetAddress1')) }} as street_address1,
        {{ canon_text(json_text('payload_doc', 'StreetAddress2')) }} as street_address2,
        {{ canon_text(json_text('payload_doc', 'City')) }} as city,
        {{ canon_text(json_text('payload_doc', 'ZipCode')) }} as zip_code,
        upper({{ canon_text(json_text('payload_doc', 'Country')) }}) as country,
        {{ canon_text(json_text('payload_doc', 'OrgNumber')) }} as org_number,
        {{ canon_text(json_text('payload_doc', 'ExternalRefs.keap')) }} as keap_ref,
        {{ try_cast_to(json_text('payload_doc', 'Version'), 'integer') }} as version,
        {{ try_cast_to(json_text('payload_doc', 'UpdatedAt'), 'timestamptz') }} as updated_at,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        records.*,
        {{ unparseable([]) }} as unparseable_fields,
        tombstones.deleted_at,
        tombstones.id is not null as is_deleted,
        '{{ invocation_id }}' as parsed_in_build
    from records
    left join tombstones
        on tombstones.resource = 'customers'
        and tombstones.id = records.customcrm_customer_id
)

select * from final
