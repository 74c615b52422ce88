"""What the Keap source reads, as data: resources, their incremental strategy, fields."""

from __future__ import annotations

from dataclasses import dataclass

# Companies' lists leave these out unless asked for in `fields`.
COMPANY_FIELDS = [
    "id",
    "company_name",
    "address",
    "email_address",
    "phone_number",
    "fax_number",
    "notes",
    "website",
    "create_time",
    "update_time",
]
# Contacts: what the mapping reads, and the whole arrays a PATCH must send back.
CONTACT_FIELDS = [
    "id",
    "given_name",
    "family_name",
    "middle_name",
    "job_title",
    "birth_date",
    "company",
    "email_addresses",
    "phone_numbers",
    "addresses",
    "fax_numbers",
    "create_time",
    "update_time",
]


@dataclass(frozen=True)
class KeapResource:
    name: str  # table name and API path
    path: str
    cursor_field: str | None  # the timestamp the incremental read follows
    strategy: (
        str  # "filter_asc": a time filter, oldest first; "desc_until": newest first, stop past the cursor
    )
    time_filter: str | None = None
    order_by: str | None = None
    fields: tuple[str, ...] | None = None
    ids_only_fields: bool = True  # whether `fields=id` works for the ids-only full pass


RESOURCES = (
    KeapResource(
        "companies",
        "companies",
        "update_time",
        "filter_asc",
        time_filter="since_time",
        fields=tuple(COMPANY_FIELDS),
    ),
    KeapResource(
        "contacts",
        "contacts",
        "update_time",
        "filter_asc",
        time_filter="start_update_time",
        order_by="update_time asc",
        fields=tuple(CONTACT_FIELDS),
    ),
    KeapResource(
        "opportunities",
        "opportunities",
        "last_updated_time",
        "desc_until",
        order_by="update_time desc",
        ids_only_fields=False,
    ),
    KeapResource(
        "products",
        "products",
        "update_time",
        "desc_until",
        order_by="last_updated_time desc",
        ids_only_fields=False,
    ),
)
STAGES = "opportunities/stages"
