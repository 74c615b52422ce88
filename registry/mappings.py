"""The four mappings of docs/specification.md, as data.

Order matters: parents before children (a contact's customer is linked before the
contact; an order's contact before the order), which is the order the push goes in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeapTarget:
    """Where a mapped value lives in the body of a Keap write.

    kind: `plain` (a top-level property), `object_key` (a key inside an object:
    `address.line1`), `array_item` (a key inside the item of an array that `slot` names:
    EMAIL1's email), `reference` (an object `{"id": ...}`: a contact's company).
    key: the key inside the object or item; `zip` stands for the address's own zip field
    (postal_code or zip_code, whichever it uses). json: how the value is written (text,
    number, minor_units, boolean, country: ISO alpha-3, close_time: a date at the
    record's time of day, reference)."""

    kind: str
    property: str
    key: str | None = None
    slot: str | None = None
    json: str = "text"


@dataclass(frozen=True)
class Field:
    """One row of a mapping's property table.

    compare_as: the canonical form both sides are compared in (text, decimal, date,
    boolean, stage, or reference_<mapping>: an id translated through that mapping's links).
    direction: both, to_customcrm (Keap's value always wins, nothing is written to Keap),
    or derived (written with another field, never merged on its own).
    keap_target: where the push writes it in Keap; None when it is never written there."""

    name: str
    keap_property: str
    customcrm_property: str
    customcrm_type: str = "string"
    compare_as: str = "text"
    direction: str = "both"
    keap_target: KeapTarget | None = None

    @property
    def customcrm_field(self) -> str:
        """The Customcrm API's field name (the property's first word)."""
        return self.customcrm_property.split(" ")[0]

    @property
    def parent(self) -> str | None:
        """The mapping a reference translates through."""
        return (
            self.compare_as.removeprefix("reference_") if self.compare_as.startswith("reference_") else None
        )


@dataclass(frozen=True)
class SearchClause:
    """Part of a marker that finds a record the sync created in Keap again (its create's
    answer lost): the value of `field` in the body created, searched with the Keap filter
    `filter_field` (equality) or `prefix_field` (a prefix with `*`), compared exactly on
    our side (`fold_case`: case-insensitively). No filter: compared only."""

    field: str
    filter_field: str | None = None
    prefix_field: str | None = None
    fold_case: bool = False


@dataclass(frozen=True)
class KeapResource:
    """A Keap REST v2 resource: its path (also the list's key and the raw table's name)
    and what Keap's document lets a reader and a writer do with it."""

    name: str
    singular: str
    cursor_field: str  # the update time the ingest's cursor follows
    id_filter: str  # the id comparison a walk by id resumes with (`contact_id>N`)
    time_filter: str | None = None  # records updated at or after (`start_update_time`)
    newest_first: str | None = None  # order_by newest first, where there is no time filter
    id_order: str | None = None  # order_by id, where Keap offers it (else its default order)
    list_fields: tuple[str, ...] = ()  # asked for in a list's `fields`
    narrowable: bool = False  # a list's `fields` picks the properties returned
    one_narrowable: bool = False  # ... and a single record's
    search_fields: str | None = None  # what a search for a lost create needs back
    markers: tuple[tuple[SearchClause, ...], ...] = ()  # what finds a created record again, best first
    create_requires: tuple[tuple[str, ...], ...] = ()  # groups, one property of each needed to create
    # Keap's REST hooks (v1) about this resource: `<singular>.<verb>` for each verb here
    hook_verbs: tuple[str, ...] = ("add", "edit", "delete")


@dataclass(frozen=True)
class CustomcrmResource:
    """A Customcrm resource: its path (also the raw table's name), and its record's name
    (the staging model's id column: customcrm_<singular>_id)."""

    name: str
    singular: str


@dataclass(frozen=True)
class Mapping:
    name: str  # the entity name every layer uses (the Customcrm resource's)
    number: int  # its place in the specification
    keap_label: str  # as the source document names the Keap side ("Companies")
    customcrm_label: str  # ... and the Customcrm side ("Customer")
    keap: KeapResource
    customcrm: CustomcrmResource
    fields: tuple[Field, ...]
    natural_key: str  # how unlinked records are matched (docs/specification.md)
    creates_in_keap: bool = False  # the reverse flow (create_in_keap) may create these in Keap

    @property
    def parents(self) -> dict[str, str]:
        """field -> the mapping its reference translates through."""
        return {f.name: f.parent for f in self.fields if f.parent}

    @property
    def keap_targets(self) -> dict[str, KeapTarget]:
        return {f.name: f.keap_target for f in self.fields if f.keap_target is not None}


def _text(name: str, keap: str, customcrm: str, target: KeapTarget | None = None, **kw: str) -> Field:
    return Field(name, keap, customcrm, keap_target=target or KeapTarget("plain", keap), **kw)


# a company list leaves the address, email, phone, fax, notes and times out unless asked for
COMPANY_LIST_FIELDS = ("id", "company_name", "address", "email_address", "phone_number", "fax_number",
                       "notes", "website", "create_time", "update_time")  # fmt: skip
# what the contacts mapping reads, and the whole arrays a PATCH must send back
CONTACT_LIST_FIELDS = ("id", "given_name", "family_name", "middle_name", "job_title", "birth_date",
                       "company", "email_addresses", "phone_numbers", "addresses", "fax_numbers",
                       "create_time", "update_time")  # fmt: skip

CUSTOMERS = Mapping(
    name="customers",
    number=1,
    keap_label="Companies",
    customcrm_label="Customer",
    keap=KeapResource(
        name="companies",
        singular="company",
        cursor_field="update_time",
        id_filter="company_id",
        time_filter="since_time",
        id_order="id asc",
        list_fields=COMPANY_LIST_FIELDS,
        narrowable=True,
        search_fields="id,company_name,create_time",
        markers=((SearchClause("company_name", "company_name", "name"),),),
        create_requires=(("company_name",),),
    ),
    customcrm=CustomcrmResource("customers", "customer"),
    natural_key="lower-cased email, else the normalized company name",
    creates_in_keap=True,
    fields=(
        _text("name", "company_name", "Name"),
        _text("description", "notes", "Description"),
        _text("website", "website", "Website"),
        _text("email", "email_address.email", "Email", KeapTarget("object_key", "email_address", "email")),
        _text("phone", "phone_number.number", "Phone", KeapTarget("object_key", "phone_number", "number")),
        _text("fax", "fax_number.number", "Fax", KeapTarget("object_key", "fax_number", "number")),
        _text(
            "street_address1", "address.line1", "StreetAddress1", KeapTarget("object_key", "address", "line1")
        ),
        _text(
            "street_address2", "address.line2", "StreetAddress2", KeapTarget("object_key", "address", "line2")
        ),
        _text("city", "address.locality", "City", KeapTarget("object_key", "address", "locality")),
        _text(
            "zip_code",
            "address.postal_code, else address.zip_code",
            "ZipCode",
            KeapTarget("object_key", "address", "zip"),
        ),
        _text(
            "country",
            "address.country_code (ISO alpha-3)",
            "Country (ISO alpha-2)",
            KeapTarget("object_key", "address", "country_code", json="country"),
        ),
    ),
)

CONTACTS = Mapping(
    name="contacts",
    number=2,
    keap_label="Contacts",
    customcrm_label="Contact",
    keap=KeapResource(
        name="contacts",
        singular="contact",
        cursor_field="update_time",
        id_filter="contact_id",
        time_filter="start_update_time",
        id_order="id asc",
        list_fields=CONTACT_LIST_FIELDS,
        narrowable=True,
        one_narrowable=True,
        search_fields="id,given_name,family_name,email_addresses,company,create_time",
        markers=(
            (SearchClause("email", "email", "email", fold_case=True),),
            (
                SearchClause("given_name", "given_name", "given_name"),
                SearchClause("family_name", "family_name", "family_name"),
                SearchClause("company"),
            ),
        ),
        create_requires=(("email_addresses", "phone_numbers", "addresses"),),
    ),
    customcrm=CustomcrmResource("contacts", "contact"),
    natural_key="lower-cased EMAIL1",
    creates_in_keap=True,
    fields=(
        _text("first_name", "given_name", "FirstName"),
        _text("last_name", "family_name", "LastName"),
        _text(
            "email",
            "email_addresses[field=EMAIL1].email",
            "Email",
            KeapTarget("array_item", "email_addresses", "email", "EMAIL1"),
        ),
        _text(
            "phone",
            "phone_numbers[field=PHONE1].number",
            "Phone",
            KeapTarget("array_item", "phone_numbers", "number", "PHONE1"),
        ),
        _text("title", "job_title", "Title"),
        Field(
            "customer",
            "company.id",
            "CustomerId",
            "reference, through mapping 1's links",
            compare_as="reference_customers",
            keap_target=KeapTarget("reference", "company", json="reference"),
        ),
        _text(
            "street_address1",
            "addresses[field=BILLING].line1",
            "StreetAddress1",
            KeapTarget("array_item", "addresses", "line1", "BILLING"),
        ),
        _text(
            "street_address2",
            "addresses[field=BILLING].line2",
            "StreetAddress2",
            KeapTarget("array_item", "addresses", "line2", "BILLING"),
        ),
        _text(
            "city",
            "addresses[field=BILLING].locality",
            "City",
            KeapTarget("array_item", "addresses", "locality", "BILLING"),
        ),
        _text(
            "zip_code",
            "addresses[field=BILLING].postal_code, else zip_code",
            "ZipCode",
            KeapTarget("array_item", "addresses", "zip", "BILLING"),
        ),
        _text(
            "country",
            "addresses[field=BILLING].country_code (alpha-3)",
            "Country (alpha-2)",
            KeapTarget("array_item", "addresses", "country_code", "BILLING", json="country"),
        ),
        Field(
            "birth_date",
            "birth_date",
            "BirthDate",
            "date",
            compare_as="date",
            keap_target=KeapTarget("plain", "birth_date"),
        ),
    ),
)

ORDERS = Mapping(
    name="orders",
    number=3,
    keap_label="Opportunity",
    customcrm_label="Order",
    keap=KeapResource(
        name="opportunities",
        singular="opportunity",
        hook_verbs=("add", "edit", "delete", "stage_move"),
        cursor_field="last_updated_time",
        id_filter="opportunity_id",
        newest_first="update_time desc",
    ),
    customcrm=CustomcrmResource("orders", "order"),
    natural_key="none: orders link only by ExternalRefs.keap",
    fields=(
        _text("title", "opportunity_title", "Title"),
        Field(
            "contact",
            "contact.id",
            "ContactId",
            "reference, through mapping 2's links",
            compare_as="reference_contacts",
            keap_target=KeapTarget("plain", "contact_id"),
        ),
        Field(
            "customer",
            "the contact's company.id",
            "CustomerId",
            "reference, through mappings 2 and 1",
            compare_as="reference_customers",
            direction="to_customcrm",
        ),
        Field(
            "stage",
            "stage.id",
            "Stage (the stage's name)",
            compare_as="stage",
            keap_target=KeapTarget("plain", "stage_id"),
        ),
        Field(
            "status",
            "stage.id",
            "Status (open, won, lost)",
            "string, by the stage_status seed, else the stage's win probability",
            direction="derived",
        ),
        Field(
            "amount",
            "projected_revenue_high",
            "Amount",
            "decimal",
            compare_as="decimal",
            keap_target=KeapTarget("plain", "projected_revenue_high", json="number"),
        ),
        Field(
            "close_date",
            "estimated_close_time",
            "CloseDate",
            "date (the UTC date)",
            compare_as="date",
            keap_target=KeapTarget("plain", "estimated_close_time", json="close_time"),
        ),
        _text("description", "opportunity_notes", "Description"),
    ),
)

PRODUCTS = Mapping(
    name="products",
    number=4,
    keap_label="Product",
    customcrm_label="Product",
    keap=KeapResource(
        name="products",
        singular="product",
        cursor_field="update_time",
        id_filter="product_id",
        newest_first="last_updated_time desc",
        markers=((SearchClause("sku", "sku", "sku"),), (SearchClause("name", "name", "name"),)),
        create_requires=(("name",), ("price",), ("short_description",)),
    ),
    customcrm=CustomcrmResource("products", "product"),
    natural_key="Sku",
    creates_in_keap=True,
    fields=(
        _text("name", "name", "Name"),
        _text("sku", "sku", "Sku"),
        _text("description", "description", "Description"),
        _text("short_description", "short_description", "ShortDescription"),
        Field(
            "price",
            "price.amount (minor units)",
            "Price",
            "decimal",
            compare_as="decimal",
            keap_target=KeapTarget("plain", "price", json="minor_units"),
        ),
        Field("currency", "price.currency_code", "Currency", direction="to_customcrm"),
        Field(
            "active",
            "active",
            "Active",
            "boolean",
            compare_as="boolean",
            keap_target=KeapTarget("plain", "active", json="boolean"),
        ),
    ),
)

MAPPINGS: tuple[Mapping, ...] = (CUSTOMERS, CONTACTS, ORDERS, PRODUCTS)

# Keap's opportunity stages: read whole each run, for the orders mapping's Stage and Status.
STAGES = KeapResource(
    name="opportunities/stages", singular="stage", cursor_field="updated_time", id_filter="", hook_verbs=()
)
STAGES_LIST_KEY = "stages"

_BY_NAME = {m.name: m for m in MAPPINGS}
_BY_KEAP = {m.keap.name: m for m in MAPPINGS}


def mapping_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def mapping(name: str) -> Mapping:
    return _BY_NAME[name]


def by_keap_resource(resource: str) -> Mapping:
    return _BY_KEAP[resource]


def keap_resource(resource: str) -> KeapResource:
    """A mapped Keap resource, or the stages."""
    return STAGES if resource == STAGES.name else _BY_KEAP[resource].keap


def customcrm_resource(resource: str) -> CustomcrmResource:
    return _BY_NAME[resource].customcrm
