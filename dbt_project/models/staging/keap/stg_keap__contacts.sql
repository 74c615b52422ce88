{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='keap_contact_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_keap', 'contacts', 'keap_contact_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

deletions as (
    select * from {{ ref('stg_keap__deletions') }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_keap', 'contacts', unless_parsed('keap_contact_id', 'contacts', 'deletions', 'keap_id')) }}
),

countries as (
    select * from {{ ref('country_codes') }}
),

picked as (
    -- EMAIL1, PHONE1 and the BILLING address are the mapped items of Keap's arrays
    select
        id,
        payload,
        payload_doc,
        _extracted_at,
        {{ json_array_item('payload_doc', 'email_addresses', 'EMAIL1') }} as email1_doc,
        {{ json_array_item('payload_doc', 'phone_numbers', 'PHONE1') }} as phone1_doc,
        {{ json_array_item('payload_doc', 'addresses', 'BILLING') }} as billing_doc
    from source
    {{ computed_once() }}
),

contacts as (
    select
        id as keap_contact_id,
        {{ canon_text(json_text('payload_doc', 'given_name')) }} as first_name,
        {{ canon_text(json_text('payload_doc', 'family_name')) }} as last_name,
        {{ canon_email(json_text('email1_doc', 'email')) }} as email,
        {{ canon_text(json_text('phone1_doc', 'number')) }} as phone,
        {{ canon_text(json_text('payload_doc', 'job_title')) }} as title,
        {{ canon_text(json_text('payload_doc', 'company.id')) }} as keap_company_id,
        {{ canon_text(json_text('billing_doc', 'line1')) }} as street_address1,
        {{ canon_text(json_text('billing_doc', 'line2')) }} as street_address2,
        {{ canon_text(json_text('billing_doc', 'locality')) }} as city,
        coalesce(
            {{ canon_text(json_text('billing_doc', 'postal_code')) }},
            {{ canon_text(json_text('billing_doc', 'zip_code')) }}
        ) as zip_code,
        case
            when {{ canon_text(json_text('billing_doc', 'postal_code')) }} is not null then 'postal_code'
            when {{ canon_text(json_text('billing_doc', 'zip_code')) }} is not null then 'zip_code'
        end as zip_field,
        upper({{ canon_text(json_text('billing_doc', 'country_code')) }}) as country_alpha3,
        {{ canon_text(json_text('payload_doc', 'birth_date')) }} as birth_date_text,
        {{ canon_date("left(" ~ canon_text(json_text('payload_doc', 'birth_date')) ~ ", 10)") }} as birth_date,
        {{ keap_timestamp(json_text('payload_doc', 'update_time')) }} as updated_at,
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
        contacts.extracted_at,
        '{{ invocation_id }}' as parsed_in_build
    from contacts
    left join countries
        on countries.alpha3 = contacts.country_alpha3
    left join deletions
        on deletions.resource = 'contacts'
        and deletions.keap_id = contacts.keap_contact_id
)

select * from final
