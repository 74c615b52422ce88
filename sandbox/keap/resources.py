"""What Keap accepts and how it answers, per resource: validation and rendering.

What a request may carry comes from Keap's own document (sandbox/keap/spec, checked by
sandbox.keap.strict); this module adds what Keap checks beyond it (email syntax,
country codes, lengths the document leaves out, required properties on create) and how
filters and orders map onto the store. Shapes follow the document's schemas (Contact,
Company, RestV2Opportunity, RestV2Product_Detail/_List, RestOpportunityStage); the
conformance test checks every answer of this sandbox against them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pycountry

from sandbox.keap.spec import operation as spec_operation
from sandbox.timefmt import keap_plus0000, keap_z

EMAIL_RE = re.compile(  # dot-atom local part, host name with an alphabetic last label
    r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
ALPHA3 = frozenset(c.alpha_3 for c in pycountry.countries)


class KeapValidationError(ValueError):
    """A 400 in Keap's v2 error body; `field` names the property at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _max_len(body: dict[str, Any], key: str, max_len: int) -> None:
    """A length limit Keap enforces and its document does not state (types are checked against
    the document before these run: sandbox.keap.strict)."""
    value = body.get(key)
    if isinstance(value, str) and len(value) > max_len:
        raise KeapValidationError(key, f"must be at most {max_len} characters")


def _email(value: Any, where: str, max_len: int = 254) -> None:
    if not isinstance(value, str) or not EMAIL_RE.match(value):
        raise KeapValidationError(where, f"'{value}' is not a valid email address")
    if len(value) > max_len:
        raise KeapValidationError(where, f"must be at most {max_len} characters")


def _address(addr: dict[str, Any], where: str, line_max: int | None = None) -> None:
    for key in ("line1", "line2"):
        if line_max is not None and len(addr.get(key) or "") > line_max:
            raise KeapValidationError(f"{where}.{key}", f"must be at most {line_max} characters")
    code = addr.get("country_code")
    if code is not None and code not in ALPHA3:
        raise KeapValidationError(f"{where}.country_code", f"'{code}' is not an ISO 3166-1 alpha-3 code")
    if (addr.get("region_code") or addr.get("region")) and not code:
        raise KeapValidationError(f"{where}.country_code", "is required when a region is set")


def _array_of(body: dict[str, Any], key: str, slots: set[str]) -> list[dict[str, Any]]:
    """An array of slotted items (EMAIL1, PHONE2, BILLING): each names a slot, at most once."""
    items: list[dict[str, Any]] = body.get(key) or []
    seen = set()
    for index, item in enumerate(items):
        slot = item.get("field")
        if slot not in slots:
            raise KeapValidationError(f"{key}[{index}].field", f"must be one of {sorted(slots)}")
        if slot in seen:
            raise KeapValidationError(f"{key}[{index}].field", f"{slot} appears twice")
        seen.add(slot)
    return items


# --- per resource: what Keap checks beyond the types, lengths and enums of its document ----


def validate_contact(body: dict[str, Any], creating: bool) -> None:
    for key in ("birth_date", "anniversary_date"):
        if body.get(key) and not re.match(r"^\d{4}-\d\d-\d\d", body[key]):
            raise KeapValidationError(key, "must be a date (YYYY-MM-DD)")
    emails = _array_of(body, "email_addresses", {"EMAIL1", "EMAIL2", "EMAIL3"})
    for index, item in enumerate(emails):
        _email(
            item.get("email"), f"email_addresses[{index}].email", 75 if item.get("field") == "EMAIL1" else 254
        )
    phones = _array_of(body, "phone_numbers", {f"PHONE{i}" for i in range(1, 6)})
    for index, item in enumerate(phones):
        number = item.get("number")
        if not isinstance(number, str) or not number.strip():
            raise KeapValidationError(f"phone_numbers[{index}].number", "is required")
        if item["field"] in ("PHONE1", "PHONE2", "PHONE3") and len(number) > 40:
            raise KeapValidationError(f"phone_numbers[{index}].number", "must be at most 40 characters")
    addresses = _array_of(body, "addresses", {"BILLING", "SHIPPING", "OTHER"})
    for index, item in enumerate(addresses):
        _address(item, f"addresses[{index}]", 75 if item["field"] == "BILLING" else None)
    _array_of(body, "fax_numbers", {"FAX1", "FAX2"})
    company = body.get("company")
    if company is not None and not isinstance(company.get("id"), str):
        raise KeapValidationError("company.id", "must be a company id (string)")
    if creating and not (emails or phones or addresses):
        raise KeapValidationError(
            "email_addresses", "a contact needs at least one email address, phone number or address"
        )


def validate_company(body: dict[str, Any], creating: bool) -> None:
    _max_len(body, "company_name", 100)
    if creating and not (body.get("company_name") or "").strip():
        raise KeapValidationError("company_name", "is required")
    email = body.get("email_address")
    if email is not None:
        _email(email.get("email"), "email_address.email")
    for key in ("phone_number", "fax_number"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value.get("number"), str):
                raise KeapValidationError(f"{key}.number", "is required")
            if len(value["number"]) > 40:
                raise KeapValidationError(f"{key}.number", "must be at most 40 characters")
    if body.get("address") is not None:
        _address(body["address"], "address")


def validate_opportunity(body: dict[str, Any], creating: bool) -> None:
    for key in ("projected_revenue_low", "projected_revenue_high"):
        if (body.get(key) or 0) < 0:
            raise KeapValidationError(key, "must not be negative")
    if creating:
        for key in ("contact_id", "opportunity_title", "stage_id"):
            if not body.get(key):
                raise KeapValidationError(key, "is required")
    elif "opportunity_title" in body and not (body.get("opportunity_title") or "").strip():
        raise KeapValidationError("opportunity_title", "must not be empty")
    for key in ("estimated_close_time", "next_action_time"):
        if body.get(key) and not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", body[key]):
            raise KeapValidationError(key, "must be an ISO-8601 date-time")


def validate_product(body: dict[str, Any], creating: bool) -> None:
    price = body.get("price")
    if price is not None and price < 0:
        raise KeapValidationError(
            "price", "must be a non-negative integer amount in minor units (1250 = 12.50)"
        )
    if creating:
        for key in ("name", "price", "short_description"):
            if body.get(key) is None or body.get(key) == "":
                raise KeapValidationError(key, "is required")


# What a schema error on these properties means to a client (sandbox.keap.strict.check_body).
MESSAGE_HINTS: dict[str, dict[str, str]] = {
    "products": {"price": "an integer amount in minor units (1250 = 12.50)"},
}


# --- rendering -------------------------------------------------------------------


def _with_fields(doc: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    if wanted is None:
        return doc
    return {k: v for k, v in doc.items() if k in wanted or k == "id"}


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Keap leaves out properties that have no value."""
    return {k: v for k, v in doc.items() if v is not None and v != [] and not k.startswith("_")}


@dataclass(frozen=True)
class FilterSql:
    """How one filter field Keap's document allows maps onto the store.

    kind: `since` / `until` (update time at or after / before), `ids` (a list of ids),
    `id` (the record id, compared), `text` (a column or a JSON path, equal or, where the
    document allows a wildcard, a prefix), `number` (a JSON number, compared)."""

    kind: str
    column: str


@dataclass(frozen=True)
class ResourceSpec:
    """What the sandbox adds to Keap's document (sandbox/keap/spec) for a resource: how to
    validate beyond the document, and how filters and orders map onto the store. What a
    request may carry (parameters, filter fields and operators, order_by fields, body
    properties) comes from the document alone."""

    name: str  # the path and the list key
    singular: str
    validate: Callable[[dict[str, Any], bool], None]
    order_sql: dict[str, str]  # Keap's order_by field -> SQL expression over the store
    filter_sql: dict[str, FilterSql]
    list_hidden: frozenset[str] = field(default_factory=frozenset)  # beyond the document's own

    @property
    def id_param(self) -> str:
        return f"{self.singular}_id"

    @property
    def one_path(self) -> str:
        return f"/{self.name}/{{{self.id_param}}}"


def _json(path: str) -> str:
    return f"json_extract(doc, '{path}')"


SPECS = {
    "contacts": ResourceSpec(
        "contacts",
        "contact",
        validate_contact,
        {"id": "id", "create_time": "create_us", "email": "email", "update_time": "update_us"},
        {
            "start_update_time": FilterSql("since", "update_us"),
            "end_update_time": FilterSql("until", "update_us"),
            "ids": FilterSql("ids", "id"),
            "contact_ids": FilterSql("ids", "id"),
            "contact_id": FilterSql("id", "id"),
            "email": FilterSql("text", "email"),
            "company_id": FilterSql("text", _json("$.company.id")),
            "given_name": FilterSql("text", _json("$.given_name")),
            "family_name": FilterSql("text", _json("$.family_name")),
            "middle_name": FilterSql("text", _json("$.middle_name")),
            "website": FilterSql("text", _json("$.website")),
        },
        list_hidden=frozenset({"custom_fields"}),
    ),
    "companies": ResourceSpec(
        "companies",
        "company",
        validate_company,
        {"id": "id", "create_time": "create_us", "name": "name", "email": "email"},
        {
            "since_time": FilterSql("since", "update_us"),
            "until_time": FilterSql("until", "update_us"),
            "company_id": FilterSql("id", "id"),
            "company_name": FilterSql("text", "name"),
            "name": FilterSql("text", "name"),
            "email": FilterSql("text", "email"),
            "city": FilterSql("text", _json("$.address.locality")),
            "state": FilterSql("text", _json("$.address.region")),
        },
    ),
    "opportunities": ResourceSpec(
        "opportunities",
        "opportunity",
        validate_opportunity,
        {
            "created_time": "create_us",
            "update_time": "update_us",
            "opportunity_title": "name",
            "next_action_time": _json("$.next_action_time"),
            "contact_name": _json("$.contact_id"),
        },
        {
            "ids": FilterSql("ids", "id"),
            "opportunity_id": FilterSql("id", "id"),
            "opportunity_title": FilterSql("text", "name"),
            "stage_id": FilterSql("text", _json("$.stage_id")),
            "contact_id": FilterSql("text", _json("$.contact_id")),
            "user_id": FilterSql("text", _json("$.user_id")),
            "affiliate_id": FilterSql("text", _json("$.affiliate_id")),
            "projected_revenue_high": FilterSql("number", _json("$.projected_revenue_high")),
            "projected_revenue_low": FilterSql("number", _json("$.projected_revenue_low")),
        },
    ),
    "products": ResourceSpec(
        "products",
        "product",
        validate_product,
        {"name": "name", "sku": "sku", "last_updated_time": "update_us"},
        {
            "product_ids": FilterSql("ids", "id"),
            "product_id": FilterSql("id", "id"),
            "name": FilterSql("text", "name"),
            "sku": FilterSql("text", "sku"),
            "description": FilterSql("text", _json("$.description")),
            "short_description": FilterSql("text", _json("$.short_description")),
        },
    ),
}


def _fields_param(path: str) -> dict[str, Any]:
    param = spec_operation("GET", path)["parameters"].get("fields")
    return param["allowed"] if param else {}  # type: ignore[no-any-return]


@cache
def list_hidden(resource: str) -> frozenset[str]:
    """What a list leaves out unless `fields` asks for it: the document's `not_by_default`
    (companies), and what the sandbox knows beyond it (contacts' custom_fields)."""
    documented = _fields_param(f"/{resource}").get("not_by_default", [])
    return SPECS[resource].list_hidden | frozenset(documented)


@cache
def optional_properties(resource: str) -> frozenset[str]:
    """Where `fields` only adds optional properties to the default ones (opportunities):
    those properties, left out unless asked for."""
    allowed = _fields_param(SPECS[resource].one_path)
    return frozenset(allowed["values"]) if allowed.get("adds_optional") else frozenset()


def format_price(amount: int, currency: str = "USD") -> dict[str, Any]:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£", "NOK": "kr "}.get(currency, currency + " ")
    return {
        "amount": amount,
        "currency_code": currency,
        "formatted_amount": f"{symbol}{amount // 100:,}.{amount % 100:02d}",
    }


def render(
    resource: str,
    doc: dict[str, Any],
    create_us: int,
    update_us: int,
    lookup: Callable[[str, str], dict[str, Any] | None],
    stage: Callable[[str], dict[str, Any] | None],
    wanted: set[str] | None = None,
    listing: bool = False,
) -> dict[str, Any]:
    """A stored document in the shape Keap answers with."""
    out = dict(doc)
    if resource == "contacts":
        out["create_time"], out["update_time"] = keap_z(create_us), keap_z(update_us)
        # Keap answers each email with its opt-in status, which a write may not carry back
        out["email_addresses"] = [
            {**item, "is_opt_in": False, "email_opt_status": "UNENGAGED_MARKETABLE"}
            for item in out.get("email_addresses") or []
        ]
        company = out.get("company")
        if company:
            found = lookup("companies", company["id"])
            out["company"] = {
                "id": company["id"],
                "company_name": found["company_name"] if found else None,
            }
            out["company"] = _clean(out["company"])
    elif resource == "companies":
        out["create_time"], out["update_time"] = keap_z(create_us), keap_z(update_us)
    elif resource == "opportunities":
        out["created_time"] = keap_plus0000(create_us)
        out["last_updated_time"] = keap_plus0000(update_us)
        contact = lookup("contacts", out.pop("contact_id", "") or "") or {}
        email1 = next(
            (e.get("email") for e in contact.get("email_addresses") or [] if e.get("field") == "EMAIL1"),
            None,
        )
        company = lookup("companies", (contact.get("company") or {}).get("id", "")) or {}
        out["contact"] = _clean(
            {
                "id": doc.get("contact_id"),
                "email": email1,
                "first_name": contact.get("given_name"),
                "last_name": contact.get("family_name"),
                "company_name": company.get("company_name"),
                "job_title": contact.get("job_title"),
            }
        )
        found_stage = stage(out.pop("stage_id", "") or "") or {}
        out["stage"] = _clean({"id": doc.get("stage_id"), "name": found_stage.get("name"), "reasons": []})
    elif resource == "products":
        out["create_time"] = keap_plus0000(create_us)
        out["update_time"] = keap_plus0000(update_us)
        out["price"] = format_price(int(out.get("price") or 0))
        inventory = out.get("inventory")
        if listing and isinstance(inventory, dict):  # a list's ProductInventory has no count
            out["inventory"] = {k: v for k, v in inventory.items() if k != "inventory_count"}
    hidden = list_hidden(resource) if listing else frozenset()
    out = {k: v for k, v in out.items() if k not in hidden}
    optional = optional_properties(resource)
    if optional:  # `fields` adds these to the default properties, and narrows nothing
        out = {k: v for k, v in out.items() if k not in optional - (wanted or set())}
    elif wanted is not None:
        out = _with_fields({**out, **_reveal(resource, doc, create_us, update_us, wanted & hidden)}, wanted)
    return _clean(out)


def _reveal(
    resource: str, doc: dict[str, Any], create_us: int, update_us: int, names: set[str]
) -> dict[str, Any]:
    """Properties a list hides by default, when asked for in `fields`."""
    out = {k: doc.get(k) for k in names if k in doc}
    if "update_time" in names:
        out["update_time"] = keap_z(update_us)
    if "create_time" in names:
        out["create_time"] = keap_z(create_us)
    return out
