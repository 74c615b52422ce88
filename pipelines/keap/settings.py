"""What the Keap source reads, as data: resources, their cursors, the fields asked for."""

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
    """A resource the source reads (how to read it incrementally is the connector's
    knowledge: connectors.keap.INCREMENTAL)."""

    name: str  # table name and API path
    path: str
    cursor_field: str  # the update timestamp the cursor follows
    fields: tuple[str, ...] | None = None  # asked for in `fields`
    ids_only_fields: bool = True  # whether `fields=id` works for the ids-only full pass


RESOURCES = (
    KeapResource("companies", "companies", "update_time", fields=tuple(COMPANY_FIELDS)),
    KeapResource("contacts", "contacts", "update_time", fields=tuple(CONTACT_FIELDS)),
    KeapResource("opportunities", "opportunities", "last_updated_time", ids_only_fields=False),
    KeapResource("products", "products", "update_time", ids_only_fields=False),
)
STAGES = "opportunities/stages"
# a full pass confirms at most this many deletions a run, one direct read each
CONFIRM_PER_RUN = 500
