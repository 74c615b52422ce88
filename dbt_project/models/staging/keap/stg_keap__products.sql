{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='keap_product_id',
    on_schema_change='fail',
    post_hook=["{{ drop_unloaded_records('raw_keap', 'products', 'keap_product_id') }}"],
) }}

-- macros/incremental_staging.sql: which records a build parses, and why that is enough
with

deletions as (
    select * from {{ ref('stg_keap__deletions') }}
),

source as (
    -- in an incremental build, only the raw rows not parsed yet (macros/incremental_staging.sql)
    {{ raw_records('raw_keap', 'products', unless_parsed('keap_product_id', 'products', 'deletions', 'keap_id')) }}
),

products as (
    select
        id as keap_product_id,
        {{ canon_text(json_text('payload_doc', 'name')) }} as name,
        {{ canon_text(json_text('payload_doc', 'sku')) }} as sku,
        {{ canon_text(json_text('payload_doc', 'description')) }} as description,
        {{ canon_text(json_text('payload_doc', 'short_description')) }} as short_description,
        -- Keap reads a price back as an object whose amount is in minor units (1250 = 12.50)
        {{ json_text('payload_doc', 'price.amount') }} as price_text,
        {{ try_cast_to(try_cast_to(json_text('payload_doc', 'price.amount'), 'bigint'), 'decimal') }} / 100 as price,
        upper({{ canon_text(json_text('payload_doc', 'price.currency_code')) }}) as currency,
        {{ json_text('payload_doc', 'active') }} as active_text,
        {{ canon_boolean(json_text('payload_doc', 'active')) }} as active,
        {{ keap_timestamp(json_text('payload_doc', 'update_time')) }} as updated_at,
        _extracted_at as extracted_at
    from source
),

final as (
    select
        products.keap_product_id,
        products.name,
        products.sku,
        products.description,
        products.short_description,
        cast(products.price as decimal(18, 2)) as price,
        products.currency,
        products.active,
        products.updated_at,
        {{ unparseable([
            ('price', 'products.price_text', 'products.price'),
            ('active', 'products.active_text', 'products.active'),
        ]) }} as unparseable_fields,
        deletions.deleted_at,
        deletions.keap_id is not null as is_deleted,
        products.extracted_at,
        '{{ invocation_id }}' as parsed_in_build
    from products
    left join deletions
        on deletions.resource = 'products'
        and deletions.keap_id = products.keap_product_id
)

select * from final
