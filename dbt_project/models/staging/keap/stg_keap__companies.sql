{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='keap_company_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_keap', 'companies', 'keap_company_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

deletions as (
    select * from {{ ref('stg_keap__deletions') }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_keap', 'companies', unless_parsed('keap_company_id', 'companies', 'deletions', 'keap_id')) }}
),

countries as (
    select * from {{ ref('country_codes') }}
),

companies as (
    select
        id as keap_company_id,
        {{ canon_text(json_text('payload_doc', 'company_name')) }} as name,
        {{ canon_text(json_text('payload_doc', 'notes')) }} as description,
        {{ canon_text(json_text('payload_doc', 'website')) }} as website,
        {{ canon_email(json_text('payload_doc', 'email_address.email')) }} as email,
        {{ canon_text(json_text('payload_doc', 'phone_number.number')) }} as phone,
        {{ canon_text(json_text('payload_doc', 'fax_number.number')) }} as fax,
        {{ canon_text(json_text('payload_doc', 'address.line1')) }} as street_address1,
        {{ canon_text(json_text('payload_doc', 'address.line2')) }} as street_address2,
        {{ canon_text(json_text('payload_doc', 'address.locality')) }} as city,
        coalesce(
            {{ canon_text(json_text('payload_doc', 'address.postal_code')) }},
            {{ canon_text(json_text('payload_doc', 'address.zip_code')) }}
        ) as zip_code,
        case
            when {{ canon_text(json_text('payload_doc', 'address.postal_code')) }} is not null then 'postal_code'
            when {{ canon_text(json_text('payload_doc', 'address.zip_code')) }} is not null then 'zip_code'
        end as zip_field,
        upper({{ canon_text(json_text('payload_doc', 'address.country_code')) }}) as country_alpha3,
        {{ canon_text(json_text('payload_doc', 'address.region_code')) }} as region_code,
        {{ keap_timestamp(json_text('payload_doc', 'update_time')) }} as updated_at,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        companies.keap_company_id,
        companies.name,
        companies.description,
        companies.website,
        companies.email,
        companies.phone,
        companies.fax,
        companies.street_address1,
        companies.street_address2,
        companies.city,
        companies.zip_code,
        countries.alpha2 as country,
        companies.zip_field,
        companies.country_alpha3,
        companies.region_code,
        companies.updated_at,
        {{ unparseable([('country', 'companies.country_alpha3', 'countries.alpha2')]) }} as unparseable_fields,
        deletions.deleted_at,
        deletions.keap_id is not null as is_deleted,
        companies.extracted_at,
        '{{ invocation_id }}' as parsed_in_build
    from companies
    left join countries
        on countries.alpha3 = companies.country_alpha3
    left join deletions
        on deletions.resource = 'companies'
        and deletions.keap_id = companies.keap_company_id
)

select * from final
