"""The markers a Keap create is found again by: searchable whatever the value holds, with
filters Keap's official document allows (a wildcard only where it says a field takes one),
or refused for that record alone, saying why."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

import registry
from reverse_etl.keap_search import Unsearchable, marker_for
from tests.keap_openapi import operation, request_problems

RESOURCE = {"customers": "companies", "contacts": "contacts", "products": "products"}


def _allowed(resource: str) -> dict[str, bool]:
    """Filter field -> takes a trailing wildcard, as Keap's document says for that list."""
    fields = operation("GET", f"/{resource}")["parameters"]["filter"]["allowed"]["fields"]
    return {name: bool(spec["wildcard"]) for name, spec in fields.items()}


CASES = [
    ("customers", {"company_name": "Fjord Analytics AS"}, "company_name==Fjord Analytics AS"),
    ("customers", {"company_name": "Smith; Jones & Co"}, "name==Smith*"),
    ("customers", {"company_name": "A=B Consulting"}, None),  # one character before the `=`: too short
    ("products", {"name": "Widget", "sku": "ACME;42"}, "sku==ACME*"),
    ("products", {"name": "Widget, large", "sku": None}, "name==Widget*"),
    ("products", {"name": "Widget", "sku": "W-1*"}, "sku==W-1*"),  # a trailing `*` is Keap's wildcard
    (
        "contacts",
        {"email_addresses": [{"field": "EMAIL1", "email": "kari@x.example"}]},
        "email==kari@x.example",
    ),
    ("contacts", {"given_name": "Nomail", "family_name": "Person"}, "given_name==Nomail;family_name==Person"),
    ("contacts", {"given_name": "Ola", "family_name": "Nor<dmann"}, "given_name==Ola;family_name==Nor*"),
    ("contacts", {"given_name": "=x", "phone_numbers": [{"field": "PHONE1", "number": "1"}]}, None),
    ("contacts", {"phone_numbers": [{"field": "PHONE1", "number": "1"}]}, None),
]


@pytest.mark.parametrize(("mapping", "payload", "expected"), CASES)
def test_a_marker_searches_with_filters_the_document_allows_or_says_why_not(
    mapping: str, payload: dict[str, object], expected: str | None
) -> None:
    if expected is None:
        with pytest.raises(Unsearchable, match=r"fix the value|add one"):
            marker_for(mapping, payload)
        return
    marker = marker_for(mapping, payload)
    assert marker["filter"] == expected
    allowed = _allowed(RESOURCE[mapping])
    for clause in marker["filter"].split(";"):
        field, value = clause.split("==", 1)
        assert field in allowed, (field, sorted(allowed))
        assert not value.endswith("*") or allowed[field], f"{field} takes no wildcard"
        assert not set(value.rstrip("*")) & set(";=<>*,!"), clause  # nothing Keap's syntax reserves
    query = {"filter": marker["filter"], "page_size": "1000"}
    wanted = registry.keap_resource(RESOURCE[mapping]).search_fields
    if wanted:  # a list Keap lets a search narrow
        query["fields"] = wanted
    url = f"https://api.infusionsoft.com/crm/rest/v2/{RESOURCE[mapping]}?{urlencode(query)}"
    assert request_problems("GET", url, None, "/crm/rest/v2") == []
    # the exact value is compared by the sync, whatever the filter matched
    assert None not in [v for k, v in marker["compare"].items() if k in ("company_name", "sku", "email")]
