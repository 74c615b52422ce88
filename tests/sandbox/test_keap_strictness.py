"""The Keap sandbox refuses what Keap's document does not allow, with Keap's 400, and
accepts what it does allow (sandbox/keap/spec/keap-v2-subset.json)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.bundle import Sandboxes
from sandbox.keap.app import API_PREFIX
from tests.keap_openapi import assert_answer, document, request_problems


@pytest.fixture
def ids(keap: httpx.Client) -> dict[str, str]:
    """One record of each resource."""
    company = keap.post("/companies", json={"company_name": "Strict AS"}).json()["id"]
    contact = keap.post(
        "/contacts",
        json={"given_name": "S", "email_addresses": [{"email": "s@x.example", "field": "EMAIL1"}]},
    ).json()["id"]
    opportunity = keap.post(
        "/opportunities", json={"contact_id": contact, "opportunity_title": "Deal", "stage_id": "10"}
    ).json()["id"]
    product = keap.post("/products", json={"name": "P", "price": 100, "short_description": "p"}).json()["id"]
    return {"company": company, "contact": contact, "opportunity": opportunity, "product": product}


# (method, path, query, body, what the message names) — each a request Keap's document refuses
REFUSED: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, list[str]]] = [
    ("GET", "/products", {"fields": "id,update_time"}, None, ["fields", "GET /products"]),
    ("GET", "/opportunities", {"fields": "id,last_updated_time"}, None, ["fields", "'id'", "custom_fields"]),
    ("GET", "/opportunities/{opportunity}", {"fields": "opportunity_title"}, None, ["fields", "'opportunity_title'"]),
    ("GET", "/contacts", {"fields": "shoe_size"}, None, ["fields", "'shoe_size'"]),
    ("GET", "/companies/{company}", {"fields": "company_name"}, None, ["fields", "'company_name'"]),
    ("GET", "/contacts", {"filter": "shoe_size==42"}, None, ["filter", "'shoe_size'"]),
    ("GET", "/opportunities", {"filter": "stage_id>5"}, None, ["filter", "'stage_id'", "'>'"]),
    ("GET", "/contacts", {"filter": "email>=a@x.example"}, None, ["filter", "'email'", "'>='"]),
    ("GET", "/companies", {"filter": "since_time<2026-01-01T00:00:00.000Z"}, None, ["filter", "since_time"]),
    ("GET", "/products", {"filter": "name"}, None, ["filter", "'name'", "<field><operator><value>"]),
    ("GET", "/products", {"filter": "name!=x"}, None, ["filter", "'name'", "'!='"]),
    ("GET", "/opportunities", {"filter": "ids==" + ",".join(map(str, range(1, 102)))}, None, ["filter", "'ids'", "100"]),
    ("GET", "/opportunities", {"filter": "ids==1;opportunity_id==1"}, None, ["filter", "'ids'", "'opportunity_id'"]),
    ("GET", "/contacts", {"filter": "phone_number==555"}, None, ["filter", "'phone_number'", "'phone_fields'"]),
    ("GET", "/opportunities/stages", {"filter": "stage_name==Lead"}, None, ["filter", "'stage_name'"]),
    ("GET", "/companies", {"order_by": "update_time desc"}, None, ["order_by", "'update_time'"]),
    ("GET", "/contacts", {"order_by": "update_time sideways"}, None, ["order_by", "'sideways'"]),
    ("GET", "/products", {"order_by": "update_time desc"}, None, ["order_by", "'update_time'"]),
    ("GET", "/opportunities/stages", {"order_by": "name"}, None, ["order_by", "'name'"]),
    ("GET", "/contacts", {"page_size": "1001"}, None, ["page_size", "1001", "1000"]),
    ("GET", "/contacts", {"page_size": "-1"}, None, ["page_size", "-1"]),
    ("GET", "/companies", {"page_size": "ten"}, None, ["page_size", "'ten'", "integer"]),
    ("GET", "/opportunities/stages", {"page_size": "2.5"}, None, ["page_size", "'2.5'"]),
    ("GET", "/contacts", {"since": "2026-01-01"}, None, ["since", "GET /contacts"]),
    ("GET", "/contacts/{contact}", {"page_size": "10"}, None, ["page_size"]),
    ("DELETE", "/products/{product}", {"fields": "id"}, None, ["fields", "DELETE /products/{product_id}"]),
    ("POST", "/contacts", {"duplicate_option": "Phone"}, {"given_name": "x"}, ["duplicate_option", "'Phone'"]),
    ("PATCH", "/products/{product}", {"update_mask": "inventory"}, {}, ["update_mask", "'inventory'"]),
    ("PATCH", "/products/{product}", {"update_mask": "name,name"}, {"name": "n"}, ["update_mask", "'name'"]),
    ("POST", "/companies", {}, {"company_name": "x", "shoe_size": 42}, ["shoe_size", "CreateCompanyRequest"]),
    (
        "POST",
        "/contacts",
        {},
        {"email_addresses": [{"email": "a@x.example", "field": "EMAIL1", "is_opt_in": True}]},
        ["email_addresses[0].is_opt_in", "EmailAddressRequest"],
    ),
    ("PATCH", "/products/{product}", {}, {"inventory": {"inventory_limit": 5}}, ["inventory", "UpdateProductRequest_Detail"]),
    ("PATCH", "/opportunities/{opportunity}", {}, {"projected_revenue_high": "lots"}, ["projected_revenue_high", "number", "'lots'"]),
    ("PATCH", "/opportunities/{opportunity}", {}, {"include_in_forecast": "yes"}, ["include_in_forecast", "boolean"]),
    ("POST", "/products", {}, {"name": "x", "price": "12.50", "short_description": "s"}, ["price", "integer", "minor units"]),
    ("PATCH", "/contacts/{contact}", {}, {"given_name": 7}, ["given_name", "string"]),
    ("PATCH", "/contacts/{contact}", {}, {"addresses": [{"field": "WORK", "country_code": "NOR"}]}, ["addresses[0].field", "'WORK'"]),
    ("PATCH", "/contacts/{contact}", {}, {"family_name": "x" * 41}, ["family_name", "40"]),
    ("POST", "/opportunities", {}, {"opportunity_title": "x", "stage_id": "10"}, ["contact_id", "required"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "named"),
    REFUSED,
    ids=[f"{m} {p} {q or ''}{b or ''}"[:70] for m, p, q, b, _ in REFUSED],
)
def test_the_sandbox_refuses_what_keaps_document_does_not_allow(
    keap: httpx.Client,
    ids: dict[str, str],
    method: str,
    path: str,
    query: dict[str, Any],
    body: dict[str, Any] | None,
    named: list[str],
) -> None:
    url = path.format(**ids)
    # the tests' own reading of the document refuses it too (apart from the sandbox's code)
    sent = keap.build_request(method, url, params=query, json=body)
    assert request_problems(method, str(sent.url), sent.content or None, API_PREFIX), (
        method,
        url,
        query,
        body,
    )

    answer = keap.request(method, url, params=query, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert set(error) == {"code", "message", "status", "details"}
    assert (error["code"], error["status"]) == (400, "Bad Request")
    for text in named:
        assert text in error["message"], (text, error["message"])
    assert error["details"] and error["details"][0]["domain"] == named[0], error["details"]
    template = next(p for p in document()["operations"] if p.split(" ", 1)[0] == method and _same(p, path))
    assert_answer(answer, method, template.split(" ", 1)[1])


def _same(key: str, path: str) -> bool:
    template = key.split(" ", 1)[1]
    return [("{" if t.startswith("{") else t) for t in template.split("/")] == [
        ("{" if t.startswith("{") else t) for t in path.split("/")
    ]


# requests the document allows, including some the sync never sends
ALLOWED: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/opportunities", {"fields": "custom_fields,status_id", "filter": "stage_id==10"}),
    ("GET", "/opportunities", {"filter": "opportunity_id>=1;projected_revenue_high<=100", "order_by": "created_time"}),
    ("GET", "/contacts", {"fields": "id,update_time", "filter": "contact_id>0;given_name==S*", "order_by": "email desc"}),
    ("GET", "/contacts", {"filter": "ids==1,2,3", "page_size": "0"}),
    ("GET", "/companies", {"fields": "id,company_name,update_time", "filter": "company_id>=1;name==Str*"}),
    ("GET", "/companies/{company}", {"fields": "notes,address"}),
    ("GET", "/products", {"filter": "product_ids==1,2;sku==P*", "order_by": "last_updated_time asc"}),
    ("GET", "/opportunities/stages", {"filter": "opportunity_stage_id>=1", "order_by": "stage_order desc"}),
    ("GET", "/contacts/{contact}", {"fields": "email_addresses"}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "query"), ALLOWED)
def test_the_sandbox_answers_what_keaps_document_allows(
    keap: httpx.Client, ids: dict[str, str], method: str, path: str, query: dict[str, Any]
) -> None:
    url = path.format(**ids)
    sent = keap.build_request(method, url, params=query)
    assert request_problems(method, str(sent.url), None, API_PREFIX) == []
    answer = keap.request(method, url, params=query)
    assert answer.status_code == 200, answer.text
    template = next(p for p in document()["operations"] if p.split(" ", 1)[0] == method and _same(p, path))
    assert_answer(answer, method, template.split(" ", 1)[1])


def test_opportunity_fields_add_optional_properties_and_narrow_nothing(
    keap: httpx.Client, ids: dict[str, str]
) -> None:
    keap.patch(
        f"/opportunities/{ids['opportunity']}",
        params={"update_mask": "custom_fields"},
        json={"custom_fields": [{"id": "7", "content": "x"}]},
    )
    plain = keap.get("/opportunities").json()["opportunities"][0]
    asked = keap.get("/opportunities", params={"fields": "custom_fields"}).json()["opportunities"][0]
    assert "custom_fields" not in plain  # optional: left out unless asked for
    assert asked["custom_fields"] == [{"id": "7", "content": "x"}]
    assert {k: v for k, v in asked.items() if k != "custom_fields"} == plain  # the defaults stay
    one = keap.get(f"/opportunities/{ids['opportunity']}", params={"fields": "custom_fields"}).json()
    assert {"opportunity_title", "stage", "contact", "custom_fields"} <= set(one)


def test_a_filter_field_the_document_allows_and_the_sandbox_cannot_answer_is_a_501(
    keap: httpx.Client,
) -> None:
    answer = keap.get("/opportunities", params={"filter": "contact_phone==480*"})
    assert answer.status_code == 501
    assert answer.json()["status"] == "Not Implemented" and "contact_phone" in answer.json()["message"]


def test_an_update_mask_name_the_body_cannot_carry_changes_nothing(
    keap: httpx.Client, ids: dict[str, str]
) -> None:
    before = keap.get(f"/contacts/{ids['contact']}").json()
    answer = keap.patch(f"/contacts/{ids['contact']}", params={"update_mask": "id,create_time,job_title"},
                        json={"job_title": "Boss"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    after = answer.json()
    assert (after["id"], after["create_time"], after["job_title"]) == (
        before["id"],
        before["create_time"],
        "Boss",
    )


def test_product_inventory_is_written_flat_and_read_as_an_object(
    keap: httpx.Client, ids: dict[str, str]
) -> None:
    answer = keap.patch(
        f"/products/{ids['product']}",
        params={"update_mask": "inventory_limit,out_of_stock_enabled"},
        json={"inventory_limit": 5, "out_of_stock_enabled": True},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["inventory"] == {"inventory_limit": 5, "out_of_stock_enabled": True}
    assert_answer(answer, "PATCH", "/products/{product_id}")


def test_the_sandbox_serves_exactly_the_operations_of_the_subset(sandboxes: Sandboxes) -> None:
    served = set()
    for route in sandboxes.keap.app.routes:
        path = getattr(route, "path", "")
        if not path.startswith(API_PREFIX):
            continue
        resource = path[len(API_PREFIX) :].split("/")[1]
        one = {"contacts": "contact_id", "companies": "company_id", "opportunities": "opportunity_id",
               "products": "product_id"}.get(resource)  # fmt: skip
        template = path[len(API_PREFIX) :].replace("{record_id}", "{" + str(one) + "}")
        served |= {f"{m} {template}" for m in getattr(route, "methods", set()) - {"HEAD"}}
    assert served == set(document()["operations"])
