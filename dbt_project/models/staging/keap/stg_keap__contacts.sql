with

source as (
    {{ raw_or_empty('raw_keap', 'contacts', raw_record_columns()) }}
),

deletions as (
    select * from {{ ref('stg_keap__deletions') }}
),

countries as (
    select * from {{ ref('country_codes') }}
),

picked as (
    -- EMAIL1, PHONE1 and the BILLING address are the mapped items of Keap's arrays
    select
        id,
        payload,
        _extracted_at,
        {{ json_array_item('payload', 'email_addresses', 'EMAIL1') }} as email1,
        {{ json_array_item('payload', 'phone_numbers', 'PHONE1') }} as phone1,
        {{ json_array_item('payload', 'addresses', 'BILLING') }} as billing
    from source
),

contacts as (
    select
        id as keap_contact_id,
        {{ canon_text(json_text('payload', 'given_name')) }} as first_name,
        {{ canon_text(json_text('payload', 'family_name')) }} as last_name,
        {{ canon_email(json_text('email1', 'email')) }} as email,
        {{ canon_text(json_text('phone1', 'number')) }} as phone,
        {{ canon_text(json_text('payload', 'job_title')) }} as title,
        {{ canon_text(json_text('payload', 'company.id')) }} as keap_company_id,
        {{ canon_text(json_text('billing', 'line1')) }} as street_address1,
        {{ canon_text(json_text('billing', 'line2')) }} as street_address2,
        {{ canon_text(json_text('billing', 'locality')) }} as city,
        coalesce(
            {{ canon_text(json_text('billing', 'postal_code')) }},
            {{ canon_text(json_text('billing', 'zip_code')) }}
        ) as zip_code,
        case
            when {{ canon_text(json_text('billing', 'postal_code')) }} is not null then 'postal_code'
            when {{ canon_text(json_text('billing', 'zip_code')) }} is not null then 'zip_code'
        end as zip_field,
        upper({{ canon_text(json_text('billing', 'country_code')) }}) as country_alpha3,
        {{ canon_text(json_text('payload', 'birth_date')) }} as birth_date_text,
        {{ canon_date("left(" ~ canon_text(json_text('payload', 'birth_date')) ~ ", 10)") }} as birth_date,
        {{ keap_timestamp(json_text('payload', 'update_time')) }} as updated_at,
        cast(payload as json) as keap_payload,
        _extracted_at as extracted_at
    from picked
),

final as (
    select
        contacts.keap_contact_id,
        contacts.first_name,
        contacts.last_name,
        contacts.email,
        contacts.phone,
        contacts.title,
        contacts.keap_company_id,
        contacts.street_address1,
        contacts.street_address2,
        contacts.city,
        contacts.zip_code,
        countries.alpha2 as country,
        contacts.birth_date,
        contacts.zip_field,
        contacts.country_alpha3,
        contacts.updated_at,
        {{ unparseable([
            ('country', 'contacts.country_alpha3', 'countries.alpha2'),
            ('birth_date', 'contacts.birth_date_text', 'contacts.birth_date'),
        ]) }} as unparseable_fields,
        deletions.deleted_at,
        deletions.keap_id is not null as is_deleted,
        contacts.keap_payload,
        contacts.extracted_at
    from contacts
    left join countries
        on countries.alpha3 = contacts.country_alpha3
    left join deletions
        on deletions.resource = 'contacts'
        and deletions.keap_id = contacts.keap_contact_id
)

select * from final
