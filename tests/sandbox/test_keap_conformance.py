"""Every Keap operation the sync uses, answered by the sandbox in exactly the shape
of Keap's official OpenAPI document (as derived into sandbox/keap/spec/keap-v2-subset.json)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.bundle import Sandboxes
from tests.keap_openapi import assert_answer, assert_shape, request_schema

SINGULAR = {
    "companies": "company",
    "contacts": "contact",
    "opportunities": "opportunity",
    "products": "product",
}


def _bodies(keap: httpx.Client) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """resource -> (create body, patch body, update_mask), each valid per Keap's document."""
    company = keap.post("/companies", json={"company_name": "Parent AS"}).json()["id"]
    contact = keap.post(
        "/contacts",
        json={"given_name": "Kari", "email_addresses": [{"email": "k@x.example", "field": "EMAIL1"}]},
    ).json()["id"]
    return {
        "companies": (
            {
                "company_name": "Fjord Analytics AS",
                "notes": "Key account",
                "website": "https://fjord.example",
                "email_address": {"email": "post@fjord.example", "field": "EMAIL1"},
                "phone_number": {"number": "+47 22 00 00 00", "field": "PHONE1"},
                "fax_number": {"number": "+47 22 00 00 01", "field": "FAX1"},
                "address": {
                    "line1": "Storgata 1",
                    "locality": "Oslo",
                    "postal_code": "0150",
                    "country_code": "NOR",
                },
            },
            {"notes": "Moved", "address": {"line1": "Karl Johans gate 2", "country_code": "NOR"}},
            "notes,address",
        ),
        "contacts": (
            {
                "given_name": "Åse",
                "family_name": "Nørby",
                "job_title": "Daglig leder",
                "birth_date": "1980-02-29",
                "company": {"id": company},
                "email_addresses": [
                    {"email": "ase@x.example", "field": "EMAIL1"},
                    {"email": "ase2@x.example", "field": "EMAIL2"},
                ],
                "phone_numbers": [{"number": "+47 900 00 000", "field": "PHONE1", "type": "Mobile"}],
                "addresses": [
                    {
                        "field": "BILLING",
                        "line1": "Storgata 1",
                        "locality": "Oslo",
                        "postal_code": "0150",
                        "country_code": "NOR",
                    },
                    {"field": "SHIPPING", "line1": "Lager 9", "locality": "Moss", "country_code": "NOR"},
                ],
            },
            {"job_title": "CEO", "email_addresses": [{"email": "ase@new.example", "field": "EMAIL1"}]},
            "job_title,email_addresses",
        ),
        "opportunities": (
            {
                "opportunity_title": "Rammeavtale 2027",
                "contact_id": contact,
                "stage_id": "11",
                "projected_revenue_high": 12500.5,
                "projected_revenue_low": 0,
                "estimated_close_time": "2026-12-01T00:00:00.000Z",
                "opportunity_notes": "Decision in Q3",
                "include_in_forecast": True,
            },
            {"stage_id": "14", "projected_revenue_high": 14000},
            "stage_id,projected_revenue_high",
        ),
        "products": (
            {
                "name": "Widget Pro",
                "sku": "W-PRO",
                "price": 1250,
                "short_description": "A widget",
                "description": "The widget",
                "active": True,
            },
            {"price": 1999, "active": False},
            "price,active",
        ),
    }


@pytest.mark.parametrize("resource", ["companies", "contacts", "opportunities", "products"])
def test_every_operation_answers_in_keaps_documented_shape(keap: httpx.Client, resource: str) -> None:
    create, patch, mask = _bodies(keap)[resource]
    singular = f"/{resource}/{{{SINGULAR[resource]}_id}}"

    # what the test sends is what Keap accepts, per its own document
    assert_shape(create, request_schema("POST", f"/{resource}"))
    assert_shape(patch, request_schema("PATCH", singular))

    created = keap.post(f"/{resource}", json=create)
    assert created.status_code == 201, created.text
    assert_answer(created, "POST", f"/{resource}")
    record_id = created.json()["id"]
    assert isinstance(record_id, str) and record_id.isdigit()  # Keap v2 ids are strings

    fetched = keap.get(f"/{resource}/{record_id}")
    assert_answer(fetched, "GET", singular)

    listed = keap.get(f"/{resource}", params={"page_size": 1000})
    assert_answer(listed, "GET", f"/{resource}")
    assert record_id in [item["id"] for item in listed.json()[resource]]

    patched = keap.patch(f"/{resource}/{record_id}", params={"update_mask": mask}, json=patch)
    assert_answer(patched, "PATCH", singular)

    missing = keap.get(f"/{resource}/999999")
    assert missing.status_code == 404
    assert_answer(missing, "GET", singular)

    bad = keap.post(f"/{resource}", json={"no_such_property": 1})
    assert bad.status_code == 400
    assert_answer(bad, "POST", f"/{resource}")

    deleted = keap.delete(f"/{resource}/{record_id}")
    assert deleted.status_code == 204
    assert_answer(deleted, "DELETE", singular)
    assert keap.get(f"/{resource}/{record_id}").status_code == 404


def test_stages_list_answers_in_keaps_documented_shape(keap: httpx.Client) -> None:
    answer = keap.get("/opportunities/stages")
    assert_answer(answer, "GET", "/opportunities/stages")
    assert {s["name"] for s in answer.json()["stages"]} >= {"Closed Won", "Closed Lost"}


def test_lists_of_demo_data_answer_in_keaps_documented_shape(
    sandboxes: Sandboxes, keap: httpx.Client
) -> None:
    sandboxes.seed_demo(size=60, seed=3)
    for resource, fields in [
        ("companies", "company_name,address,email_address,phone_number,fax_number,notes,website,update_time"),
        ("contacts", None),
        ("opportunities", None),
        ("products", None),
    ]:
        params = {"page_size": 1000, **({"fields": fields} if fields else {})}
        answer = keap.get(f"/{resource}", params=params)
        assert_answer(answer, "GET", f"/{resource}")
        assert len(answer.json()[resource]) == 60


def test_the_shape_check_catches_an_undeclared_property() -> None:
    schema = {"$ref": "#/components/schemas/ListOpportunityStagesResponse"}
    assert_shape({"stages": [{"id": "1", "name": "Lead"}]}, schema)
    with pytest.raises(AssertionError, match=r"does not declare"):
        assert_shape({"stages": [{"id": "1", "stage_name": "Lead"}]}, schema)
    with pytest.raises(AssertionError, match="does not match"):
        assert_shape({"stages": [{"id": 1}]}, schema)
