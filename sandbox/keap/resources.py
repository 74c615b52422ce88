"""What Keap accepts and how it answers, per resource: validation and rendering.

Shapes follow Keap's OpenAPI document for v2 (Contact, Company, RestV2Opportunity,
RestV2Product_Detail/_List, RestOpportunityStage); the conformance test checks
every answer of this sandbox against that document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pycountry

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


def _str(body: dict[str, Any], key: str, max_len: int | None = None) -> None:
    value = body.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise KeapValidationError(key, "must be a string")
    if max_len is not None and len(value) > max_len:
        raise KeapValidationError(key, f"must be at most {max_len} characters")


def _bool(body: dict[str, Any], key: str) -> None:
    if body.get(key) is not None and not isinstance(body[key], bool):
        raise KeapValidationError(key, "must be a boolean")


def _number(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise KeapValidationError(key, "must be a number")


def _email(value: Any, where: str, max_len: int = 254) -> None:
    if not isinstance(value, str) or not EMAIL_RE.match(value):
        raise KeapValidationError(where, f"'{value}' is not a valid email address")
    if len(value) > max_len:
        raise KeapValidationError(where, f"must be at most {max_len} characters")


def _address(addr: Any, where: str, line_max: int | None = None) -> None:
    if not isinstance(addr, dict):
        raise KeapValidationError(where, "must be an object")
    allowed = {
        "country",
        "line1",
        "line2",
        "locality",
        "region",
        "field",
        "country_code",
        "postal_code",
        "region_code",
        "zip_code",
        "zip_four",
    }
    unknown = set(addr) - allowed
    if unknown:
        raise KeapValidationError(f"{where}.{sorted(unknown)[0]}", "unknown property")
    for key in allowed - {"field"}:
        _str(addr, key, line_max if key in ("line1", "line2") else None)
    code = addr.get("country_code")
    if code is not None and code not in ALPHA3:
        raise KeapValidationError(f"{where}.country_code", f"'{code}' is not an ISO 3166-1 alpha-3 code")
    if (addr.get("region_code") or addr.get("region")) and not code:
        raise KeapValidationError(f"{where}.country_code", "is required when a region is set")


def _array_of(body: dict[str, Any], key: str, fields_allowed: set[str], enum: set[str]) -> list[Any]:
    items = body.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise KeapValidationError(key, "must be an array")
    seen = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise KeapValidationError(f"{key}[{index}]", "must be an object")
        unknown = set(item) - fields_allowed
        if unknown:
            raise KeapValidationError(f"{key}[{index}].{sorted(unknown)[0]}", "unknown property")
        slot = item.get("field")
        if slot not in enum:
            raise KeapValidationError(f"{key}[{index}].field", f"must be one of {sorted(enum)}")
        if slot in seen:
            raise KeapValidationError(f"{key}[{index}].field", f"{slot} appears twice")
        seen.add(slot)
    return items


# --- per resource --------------------------------------------------------------


def validate_contact(body: dict[str, Any], creating: bool) -> None:
    for key, max_len in (
        ("given_name", 40),
        ("family_name", 40),
        ("middle_name", 100),
        ("job_title", 255),
        ("website", 100),
        ("preferred_name", 100),
        ("spouse_name", 100),
        ("prefix", None),
        ("suffix", None),
        ("birth_date", None),
        ("anniversary_date", None),
        ("owner_id", None),
        ("contact_type", None),
        ("time_zone", None),
        ("preferred_locale", None),
        ("leadsource_id", None),
        ("referral_code", None),
        ("assistant_name", 20),
        ("assistant_phone", 15),
        ("billing_information", 100),
    ):
        _str(body, key, max_len)
    for key in ("birth_date", "anniversary_date"):
        if body.get(key) and not re.match(r"^\d{4}-\d\d-\d\d", body[key]):
            raise KeapValidationError(key, "must be a date (YYYY-MM-DD)")
    emails = _array_of(
        body, "email_addresses", {"email", "field", "opt_in_reason"}, {"EMAIL1", "EMAIL2", "EMAIL3"}
    )
    for index, item in enumerate(emails):
        _email(
            item.get("email"), f"email_addresses[{index}].email", 75 if item.get("field") == "EMAIL1" else 254
        )
    phones = _array_of(
        body,
        "phone_numbers",
        {"number", "field", "type", "extension", "number_e164"},
        {f"PHONE{i}" for i in range(1, 6)},
    )
    for index, item in enumerate(phones):
        number = item.get("number")
        if not isinstance(number, str) or not number.strip():
            raise KeapValidationError(f"phone_numbers[{index}].number", "is required")
        if item["field"] in ("PHONE1", "PHONE2", "PHONE3") and len(number) > 40:
            raise KeapValidationError(f"phone_numbers[{index}].number", "must be at most 40 characters")
    addresses = _array_of(
        body,
        "addresses",
        {
            "country",
            "line1",
            "line2",
            "locality",
            "region",
            "field",
            "country_code",
            "postal_code",
            "region_code",
            "zip_code",
            "zip_four",
        },
        {"BILLING", "SHIPPING", "OTHER"},
    )
    for index, item in enumerate(addresses):
        _address(item, f"addresses[{index}]", 75 if item["field"] == "BILLING" else None)
    _array_of(body, "fax_numbers", {"number", "type", "field"}, {"FAX1", "FAX2"})
    company = body.get("company")
    if company is not None and (not isinstance(company, dict) or not isinstance(company.get("id"), str)):
        raise KeapValidationError("company.id", "must be a company id (string)")
    if creating and not (emails or phones or addresses):
        raise KeapValidationError(
            "email_addresses", "a contact needs at least one email address, phone number or address"
        )


def validate_company(body: dict[str, Any], creating: bool) -> None:
    for key in (
        "company_name",
        "notes",
        "website",
        "suffix",
        "title",
        "first_name",
        "last_name",
        "middle_name",
        "job_title",
        "preferred_name",
        "spouse_name",
        "owner_id",
        "referral_code",
        "contact_type",
        "birth_date",
        "anniversary_date",
        "assistant_name",
        "assistant_phone",
        "billing_information",
    ):
        _str(body, key, 100 if key == "company_name" else None)
    if creating and not (body.get("company_name") or "").strip():
        raise KeapValidationError("company_name", "is required")
    email = body.get("email_address")
    if email is not None:
        if not isinstance(email, dict) or set(email) - {
            "email",
            "field",
            "opt_in_reason",
            "is_opt_in",
            "email_opt_status",
        }:
            raise KeapValidationError("email_address", "must be an EmailAddress object")
        _email(email.get("email"), "email_address.email")
    for key in ("phone_number", "fax_number"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, dict) or not isinstance(value.get("number"), str):
                raise KeapValidationError(f"{key}.number", "is required")
            if len(value["number"]) > 40:
                raise KeapValidationError(f"{key}.number", "must be at most 40 characters")
    if body.get("address") is not None:
        _address(body["address"], "address")


def validate_opportunity(body: dict[str, Any], creating: bool) -> None:
    for key in (
        "opportunity_title",
        "opportunity_notes",
        "next_action_notes",
        "contact_id",
        "stage_id",
        "user_id",
        "affiliate_id",
        "estimated_close_time",
        "next_action_time",
    ):
        _str(body, key)
    for key in ("projected_revenue_low", "projected_revenue_high"):
        _number(body, key)
        if (body.get(key) or 0) < 0:
            raise KeapValidationError(key, "must not be negative")
    _bool(body, "include_in_forecast")
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
    for key in (
        "name",
        "sku",
        "description",
        "short_description",
        "top_html",
        "bottom_html",
        "delivery_description",
    ):
        _str(body, key)
    for key in (
        "active",
        "shippable",
        "taxable",
        "subscription_only",
        "storefront_hidden",
        "country_taxable",
        "state_taxable",
        "city_taxable",
        "is_package",
        "needs_digital_delivery",
    ):
        _bool(body, key)
    _number(body, "weight")
    price = body.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int) or price < 0):
        raise KeapValidationError(
            "price", "must be a non-negative integer amount in minor units (1250 = 12.50)"
        )
    if creating:
        for key in ("name", "price", "short_description"):
            if body.get(key) is None or body.get(key) == "":
                raise KeapValidationError(key, "is required")


# --- rendering -------------------------------------------------------------------


def _with_fields(doc: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    if wanted is None:
        return doc
    return {k: v for k, v in doc.items() if k in wanted or k == "id"}


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Keap leaves out properties that have no value."""
    return {k: v for k, v in doc.items() if v is not None and v != [] and not k.startswith("_")}


COMPANY_LIST_HIDDEN = frozenset(
    {
        "address",
        "email_address",
        "phone_number",
        "fax_number",
        "notes",
        "custom_fields",
        "create_time",
        "update_time",
    }
)


@dataclass(frozen=True)
class ResourceSpec:
    name: str  # the path and the list key
    singular: str
    writable: frozenset[str]
    validate: Callable[[dict[str, Any], bool], None]
    order_by: dict[str, str]  # Keap name -> SQL expression
    filters: frozenset[str]
    list_hidden: frozenset[str] = field(default_factory=frozenset)
    accepts_fields: bool = True


CONTACT_WRITABLE = frozenset(
    {
        "addresses",
        "company",
        "origin",
        "prefix",
        "suffix",
        "website",
        "anniversary_date",
        "birth_date",
        "contact_type",
        "custom_fields",
        "email_addresses",
        "family_name",
        "fax_numbers",
        "given_name",
        "job_title",
        "leadsource_id",
        "middle_name",
        "owner_id",
        "phone_numbers",
        "preferred_locale",
        "preferred_name",
        "referral_code",
        "social_accounts",
        "source_type",
        "spouse_name",
        "time_zone",
        "utm_parameters",
        "assistant_name",
        "assistant_phone",
        "billing_information",
    }
)
COMPANY_WRITABLE = frozenset(
    {
        "address",
        "notes",
        "website",
        "suffix",
        "title",
        "company_name",
        "custom_fields",
        "email_address",
        "fax_number",
        "phone_number",
        "anniversary_date",
        "assistant_name",
        "assistant_phone",
        "billing_information",
        "birth_date",
        "contact_type",
        "first_name",
        "job_title",
        "last_name",
        "middle_name",
        "preferred_name",
        "owner_id",
        "referral_code",
        "spouse_name",
    }
)
OPPORTUNITY_WRITABLE = frozenset(
    {
        "opportunity_title",
        "next_action_time",
        "next_action_notes",
        "opportunity_notes",
        "estimated_close_time",
        "include_in_forecast",
        "projected_revenue_low",
        "projected_revenue_high",
        "contact_id",
        "stage_id",
        "user_id",
        "custom_fields",
        "affiliate_id",
    }
)
PRODUCT_WRITABLE = frozenset(
    {
        "name",
        "sku",
        "price",
        "active",
        "description",
        "shippable",
        "weight",
        "taxable",
        "inventory",
        "short_description",
        "subscription_only",
        "storefront_hidden",
        "country_taxable",
        "state_taxable",
        "city_taxable",
        "top_html",
        "bottom_html",
        "is_package",
        "needs_digital_delivery",
        "delivery_description",
    }
)

SPECS = {
    "contacts": ResourceSpec(
        "contacts",
        "contact",
        CONTACT_WRITABLE,
        validate_contact,
        {"id": "id", "create_time": "create_us", "email": "email", "update_time": "update_us"},
        frozenset(
            {
                "start_update_time",
                "end_update_time",
                "ids",
                "contact_id",
                "contact_ids",
                "email",
                "company_id",
                "given_name",
                "family_name",
            }
        ),
        list_hidden=frozenset({"custom_fields"}),
    ),
    "companies": ResourceSpec(
        "companies",
        "company",
        COMPANY_WRITABLE,
        validate_company,
        {"id": "id", "create_time": "create_us", "name": "name", "email": "email"},
        frozenset({"since_time", "until_time", "company_name", "name", "email", "company_id"}),
        list_hidden=COMPANY_LIST_HIDDEN,
    ),
    "opportunities": ResourceSpec(
        "opportunities",
        "opportunity",
        OPPORTUNITY_WRITABLE,
        validate_opportunity,
        {
            "created_time": "create_us",
            "update_time": "update_us",
            "opportunity_title": "name",
            "next_action_time": "json_extract(doc, '$.next_action_time')",
            "contact_name": "json_extract(doc, '$.contact_id')",
        },
        frozenset({"stage_id", "contact_id", "ids", "opportunity_id", "opportunity_title", "user_id"}),
    ),
    "products": ResourceSpec(
        "products",
        "product",
        PRODUCT_WRITABLE,
        validate_product,
        {"name": "name", "sku": "sku", "last_updated_time": "update_us"},
        frozenset({"name", "sku", "product_id", "product_ids", "description", "short_description"}),
        accepts_fields=False,
    ),
}


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
    if listing:
        out = {k: v for k, v in out.items() if k not in SPECS[resource].list_hidden}
    if wanted is not None:
        hidden = SPECS[resource].list_hidden if listing else frozenset()
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
