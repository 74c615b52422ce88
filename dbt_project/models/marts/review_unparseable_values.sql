-- Mapped values that do not parse (a date like 1980-02-30, an amount that is not a number, a
-- country code the table does not know): the merge leaves each such field alone on that
-- pair (nothing is written, its base stays) until the value is fixed in the system it
-- came from. The rest of the record, and every other record, syncs as usual.
-- One pair of staging models per mapping of registry/mappings.py; the record as its system
-- sent it from stg_keap__payloads and stg_customcrm__payloads.
with

records as (
    {%- for name in registry_mappings() %}
    {%- set m = registry_mapping(name) %}
    select 'keap' as system, '{{ m.keap_resource }}' as resource, staged.keap_{{ m.keap_singular }}_id as record_id,
        staged.unparseable_fields, cast(sent.keap_payload as json) as record
    from {{ ref('stg_keap__' ~ m.keap_resource) }} as staged
    join {{ ref('stg_keap__payloads') }} as sent
        on sent.resource = '{{ m.keap_resource }}'
        and sent.keap_id = staged.keap_{{ m.keap_singular }}_id
    where staged.unparseable_fields <> {{ empty_text_list() }}
    union all
    select 'customcrm', '{{ m.customcrm_resource }}', staged.customcrm_{{ m.customcrm_singular }}_id,
        staged.unparseable_fields, cast(sent.customcrm_payload as json)
    from {{ ref('stg_customcrm__' ~ m.customcrm_resource) }} as staged
    join {{ ref('stg_customcrm__payloads') }} as sent
        on sent.resource = '{{ m.customcrm_resource }}'
        and sent.customcrm_id = staged.customcrm_{{ m.customcrm_singular }}_id
    where staged.unparseable_fields <> {{ empty_text_list() }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        system,
        resource,
        record_id,
        unnest(unparseable_fields) as field,
        record
    from records
    where unparseable_fields <> {{ empty_text_list() }}
)

select * from final
