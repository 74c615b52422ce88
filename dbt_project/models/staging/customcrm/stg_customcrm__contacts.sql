{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='customcrm_contact_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_customcrm', 'contacts', 'customcrm_contact_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

tombstones as (
    {{ raw_or_empty('raw_customcrm', 'tombstones', {'resource': 'varchar', 'id': 'varchar', 'deleted_at': 'timestamptz', 'updated_at': 'timestamptz', 'external_refs': 'varchar', '_extracted_at': 'timestamptz'}) }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_customcrm', 'contacts', unless_parsed('customcrm_contact_id', 'contacts', 'tombstones', 'id')) }}
),

records as (
    select
        id as customcrm_contact_id,
        {{ canon_text(json_text('payload_doc', 'FirstName')) }} as first_name,
        {{ canon_text(json_text('payload_doc', 'LastName')) }} as last_name,
        {{ canon_email(json_text('payload_doc', 'Email')) }} as email,
        {{ canon_text(json_text('payload_doc', 'Phone')) }} as phone,
        {{ canon_text(json_text('payload_doc', 'Title')) }} as title,
        {{ canon_text(json_text('payload_doc', 'CustomerId')) }} as customcrm_customer_id,
        {{ canon_text(json_text('payload_doc', 'StreetAddress1')) }} as street_address1,
        {{ canon_text(json_text('payload_doc', 'StreetAddress2')) }} as street_address2,
        {{ canon_text(json_text('payload_doc', 'City')) }} as city,
        {{ canon_text(json_text('payload_doc', 'ZipCode')) }} as zip_code,
        upper({{ canon_text(json_text('payload_doc', 'Country')) }}) as country,
        {{ canon_date(canon_text(json_text('payload_doc', 'BirthDate'))) }} as birth_date,
        {{ canon_text(json_text('payload_doc', 'ExternalRefs.keap')) }} as keap_ref,
        {{ try_cast_to(json_text('payload_doc', 'Version'), 'integer') }} as version,
        {{ try_cast_to(json_text('payload_doc', 'UpdatedAt'), 'timestamptz') }} as updated_at,
        -- a value sent that does not parse (macros/canonical.sql)
        {{ unparseable([
            ('birth_date', canon_text(json_text('payload_doc', 'BirthDate')), canon_date(canon_text(json_text('payload_doc', 'BirthDate')))),
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
        on tombstones.resource = 'contacts'
        and tombstones.id = records.customcrm_contact_id
)

select * from final
