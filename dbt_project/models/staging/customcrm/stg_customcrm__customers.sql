with

source as (
    {{ raw_or_empty('raw_customcrm', 'customers', raw_record_columns()) }}
),

tombstones as (
    {{ raw_or_empty('raw_customcrm', 'tombstones', {'resource': 'varchar', 'id': 'varchar', 'deleted_at': 'timestamptz', 'updated_at': 'timestamptz', 'external_refs': 'varchar', '_extracted_at': 'timestamptz'}) }}
),

records as (
    select
        id as customcrm_customer_id,
        {{ canon_text(json_text('payload', 'Name')) }} as name,
        {{ canon_text(json_text('payload', 'Description')) }} as description,
        {{ canon_text(json_text('payload', 'Website')) }} as website,
        {{ canon_email(json_text('payload', 'Email')) }} as email,
        {{ canon_text(json_text('payload', 'Phone')) }} as phone,
        {{ canon_text(json_text('payload', 'Fax')) }} as fax,
        {{ canon_text(json_text('payload', 'StreetAddress1')) }} as street_address1,
        {{ canon_text(json_text('payload', 'StreetAddress2')) }} as street_address2,
        {{ canon_text(json_text('payload', 'City')) }} as city,
        {{ canon_text(json_text('payload', 'ZipCode')) }} as zip_code,
        upper({{ canon_text(json_text('payload', 'Country')) }}) as country,
        {{ canon_text(json_text('payload', 'OrgNumber')) }} as org_number,
        {{ canon_text(json_text('payload', 'ExternalRefs.keap')) }} as keap_ref,
        {{ try_cast_to(json_text('payload', 'Version'), 'integer') }} as version,
        {{ try_cast_to(json_text('payload', 'UpdatedAt'), 'timestamptz') }} as updated_at,
        cast(payload as json) as customcrm_payload,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        records.*,
        {{ unparseable([]) }} as unparseable_fields,
        tombstones.deleted_at,
        tombstones.id is not null as is_deleted
    from records
    left join tombstones
        on tombstones.resource = 'customers'
        and tombstones.id = records.customcrm_customer_id
)

select * from final
