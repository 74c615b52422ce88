"""The Customcrm contract (docs/customcrm-api.md), clause by clause."""

from __future__ import annotations

import functools
import json
import re

import httpx
import pytest
import yaml

from sandbox.bundle import Sandboxes
from sandbox.customcrm.app import OPENAPI_PATH
from tests.conftest import admin


def _customer(crm: httpx.Client, **fields: object) -> dict:
    answer = crm.post("/customers", json={"Name": "Acme", **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _all(crm: httpx.Client, path: str, **params: object) -> list[dict]:
    items, cursor = [], None
    while True:
        page = crm.get(path, params={**params, **({"cursor": cursor} if cursor else {})}).json()
        items += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_create_answers_201_with_location_etag_and_server_fields(crm: httpx.Client) -> None:
    answer = crm.post("/customers", json={"Name": "Acme", "Country": "NO", "ExternalRefs": {"keap": "2001"}})
    assert answer.status_code == 201
    record = answer.json()
    assert answer.headers["etag"] == '"1"' and record["Version"] == 1
    assert answer.headers["location"].endswith(f"/customers/{record['Id']}")
    assert record["Id"].startswith("cus_") and record["DeletedAt"] is None
    assert record["CreatedAt"].endswith("Z") and len(record["CreatedAt"]) == len(
        "2026-11-26T18:03:36.123456Z"
    )
    assert record["OrgNumber"] is None and record["ExternalRefs"] == {"keap": "2001"}


def test_cursor_paging_resumes_after_the_last_record_and_never_skips_an_update(
    sandboxes: Sandboxes, crm: httpx.Client
) -> None:
    for index in range(7):
        _customer(crm, Name=f"C{index}")
    first = crm.get("/customers", params={"limit": 3}).json()
    assert len(first["data"]) == 3 and first["next_cursor"]
    moved = first["data"][0]["Id"]  # updated while paging: it must show up again later
    crm.patch(f"/customers/{moved}", json={"City": "Oslo"})
    rest = _all(crm, "/customers", limit=3, cursor=first["next_cursor"])
    ids = [r["Id"] for r in first["data"]] + [r["Id"] for r in rest]
    assert len(set(ids)) == 7 and ids.count(moved) == 2 and ids[-1] == moved
    stamps = [(r["UpdatedAt"], r["Id"]) for r in rest]
    assert stamps == sorted(stamps)


def test_updated_since_is_inclusive_and_tombstones_need_include_deleted(crm: httpx.Client) -> None:
    keep = _customer(crm, Name="Keep")
    gone = _customer(crm, Name="Gone", ExternalRefs={"keap": "9"})
    assert crm.delete(f"/customers/{gone['Id']}").status_code == 204
    since = crm.get("/customers", params={"updated_since": gone["UpdatedAt"]}).json()["data"]
    assert since == []  # the only record updated since then is deleted
    with_deleted = crm.get(
        "/customers", params={"updated_since": keep["UpdatedAt"], "include_deleted": "true"}
    )
    data = with_deleted.json()["data"]
    assert [r["Id"] for r in data] == [keep["Id"], gone["Id"]]  # inclusive of keep's own UpdatedAt
    tombstone = data[1]
    assert set(tombstone) == {"Id", "DeletedAt", "UpdatedAt", "ExternalRefs"}
    assert tombstone["ExternalRefs"] == {"keap": "9"}
    assert crm.get(f"/customers/{gone['Id']}").status_code == 404
    assert crm.patch(f"/customers/{gone['Id']}", json={"Name": "x"}).status_code == 404


def test_external_ref_filter_is_exact(crm: httpx.Client) -> None:
    one = _customer(crm, ExternalRefs={"keap": "12"})
    _customer(crm, ExternalRefs={"keap": "123"})
    found = crm.get("/customers", params={"external_ref": "keap:12"}).json()["data"]
    assert [r["Id"] for r in found] == [one["Id"]]


@functools.cache
def _contract_pattern() -> str:
    document = yaml.safe_load(OPENAPI_PATH.read_text())
    return document["components"]["parameters"]["external_ref"]["schema"]["pattern"]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("keap:12", True),
        ("keap_v2:a:b", True),  # the id may hold a colon: only the system is constrained
        ("k" + "x" * 31 + ":1", True),  # a system of 32 characters
        ("k" + "x" * 32 + ":1", False),  # 33
        ("Keap:12", False),  # upper case
        ("2keap:12", False),  # a digit first
        ("keap:", False),  # no id
        (":12", False),  # no system
        ("keap12", False),  # no colon
        ("keap-x:12", False),  # a hyphen in the system
    ],
)
def test_external_ref_query_must_match_the_contracts_whole_pattern(
    crm: httpx.Client, value: str, allowed: bool
) -> None:
    assert bool(re.search(_contract_pattern(), value)) is allowed  # the examples agree with the contract
    answer = crm.get("/customers", params={"external_ref": value})
    if allowed:
        assert answer.status_code == 200 and answer.json()["data"] == []
    else:
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in answer.json()["errors"]] == ["external_ref"]


def test_if_match_and_412(crm: httpx.Client) -> None:
    record = _customer(crm)
    ok = crm.patch(f"/customers/{record['Id']}", json={"City": "Oslo"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'
    stale = crm.patch(f"/customers/{record['Id']}", json={"City": "Bergen"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert crm.get(f"/customers/{record['Id']}").json()["City"] == "Oslo"
    assert crm.delete(f"/customers/{record['Id']}", headers={"If-Match": '"1"'}).status_code == 412


def test_idempotency_key_replays_the_original_answer(crm: httpx.Client) -> None:
    body = {"Name": "Once", "ExternalRefs": {"keap": "77"}}
    first = crm.post("/customers", json=body, headers={"Idempotency-Key": "customers:keap:77"})
    again = crm.post("/customers", json=body, headers={"Idempotency-Key": "customers:keap:77"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert len(crm.get("/customers", params={"external_ref": "keap:77"}).json()["data"]) == 1
    other = crm.post("/customers", json={"Name": "Other"}, headers={"Idempotency-Key": "customers:keap:77"})
    assert other.status_code == 422


def test_merge_patch_sets_clears_and_merges_external_refs(crm: httpx.Client) -> None:
    record = _customer(crm, City="Oslo", OrgNumber="999", ExternalRefs={"keap": "1", "erp": "E1"})
    patched = crm.patch(
        f"/customers/{record['Id']}",
        json={"City": None, "Phone": "+47 1", "ExternalRefs": {"erp": None, "shop": "S"}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).json()
    assert patched["City"] is None and patched["Phone"] == "+47 1" and patched["OrgNumber"] == "999"
    assert patched["ExternalRefs"] == {"keap": "1", "shop": "S"}
    assert crm.patch(f"/customers/{record['Id']}", json={"Name": None}).status_code == 422


def test_a_patch_that_changes_nothing_keeps_version_and_updated_at(crm: httpx.Client) -> None:
    record = _customer(crm, City="Oslo")
    same = crm.patch(f"/customers/{record['Id']}", json={"City": "Oslo", "Name": "Acme"}).json()
    assert (same["Version"], same["UpdatedAt"]) == (record["Version"], record["UpdatedAt"])


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/customers", {"Name": "x", "Bogus": 1}, 422, "Bogus"),
        ("/customers", {"Name": ""}, 422, "Name"),
        ("/customers", {"Name": "x", "Country": "NOR"}, 422, "Country"),
        ("/customers", {"Name": "x", "Email": "not-an-email"}, 422, "Email"),
        ("/contacts", {"Title": "nobody"}, 422, "FirstName"),
        ("/contacts", {"FirstName": "x", "CustomerId": "cus_nope"}, 422, "CustomerId"),
        ("/orders", {"Title": "x", "Amount": 12.5}, 422, "Amount"),
        ("/orders", {"Title": "x", "Amount": "12.5"}, 422, "Amount"),
        ("/orders", {"Title": "x", "Status": "pending"}, 422, "Status"),
        ("/products", {"Name": "x"}, 422, "Price"),
        ("/products", {"Name": "x", "Price": "-1.00"}, 422, "Price"),
    ],
)
def test_validation_is_problem_json_naming_the_field(
    crm: httpx.Client, path: str, body: dict, status: int, field: str
) -> None:
    answer = crm.post(path, json=body)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    assert field in [e["field"] for e in problem["errors"]]


def test_uniqueness_among_live_records(crm: httpx.Client) -> None:
    first = crm.post("/contacts", json={"Email": "Kari@x.example"}).json()
    clash = crm.post("/contacts", json={"Email": "kari@X.example"})
    assert clash.status_code == 409 and clash.json()["errors"][0]["field"] == "Email"
    crm.delete(f"/contacts/{first['Id']}")
    assert crm.post("/contacts", json={"Email": "kari@x.example"}).status_code == 201  # deleted ones free it
    crm.post("/products", json={"Name": "P", "Sku": "S-1", "Price": "1.00"})
    assert crm.post("/products", json={"Name": "Q", "Sku": "S-1", "Price": "1.00"}).status_code == 409


def test_defaults_and_money(crm: httpx.Client) -> None:
    order = crm.post("/orders", json={"Title": "O", "Amount": "1250.00"}).json()
    assert (order["Status"], order["Currency"], order["Amount"]) == ("open", "USD", "1250.00")
    product = crm.post("/products", json={"Name": "P", "Price": "0.50"}).json()
    assert (product["Active"], product["Currency"]) == (True, "USD")


def test_batch_results_are_per_operation_and_in_order(crm: httpx.Client) -> None:
    customer = _customer(crm)
    answer = crm.post(
        "/contacts/batch",
        json={
            "operations": [
                {
                    "op": "create",
                    "data": {"Email": "a@x.example", "CustomerId": customer["Id"]},
                    "idempotency_key": "contacts:keap:1",
                },
                {"op": "create", "data": {"Email": "a@x.example"}},  # 409: the first took the address
                {"op": "update", "id": "con_missing", "data": {"Title": "x"}},
                {"op": "create", "data": {"FirstName": "Ok"}},
            ]
        },
    )
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 404, 201]
    assert results[1]["error"]["errors"][0]["field"] == "Email"
    created = results[0]["data"]
    update = crm.post(
        "/contacts/batch",
        json={
            "operations": [
                {"op": "update", "id": created["Id"], "if_match": '"1"', "data": {"Title": "CEO"}},
                {"op": "update", "id": created["Id"], "if_match": '"1"', "data": {"Title": "CTO"}},
                {"op": "delete", "id": results[3]["data"]["Id"]},
            ]
        },
    ).json()["results"]
    assert [r["status"] for r in update] == [200, 412, 204]
    too_many = crm.post(
        "/contacts/batch", json={"operations": [{"op": "create", "data": {"FirstName": "x"}}] * 101}
    )
    assert too_many.status_code == 422


def test_auth_rate_limits_and_body_size(sandboxes: Sandboxes, crm: httpx.Client) -> None:
    with httpx.Client(base_url=sandboxes.customcrm_url) as anonymous:
        refused = anonymous.get("/customers")
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
        assert anonymous.get("/customers", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = crm.get("/customers")
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(answer.headers)
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": {"rate": 1, "burst": 3}})
    statuses = [crm.get("/customers") for _ in range(5)]
    assert [a.status_code for a in statuses][:3] == [200, 200, 200]
    throttled = next(a for a in statuses if a.status_code == 429)
    assert int(throttled.headers["retry-after"]) >= 1 and throttled.headers["ratelimit-remaining"] == "0"
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    huge = crm.post("/customers", json={"Name": "x", "Description": "y" * (1024 * 1024 + 1)})
    assert huge.status_code == 413
    # a batch is a body like any other: over 1 MiB (here by 1 byte) it is refused whole
    operation = {"op": "create", "data": {"Name": "x", "Description": "d" * 9_990}}
    envelope = json.dumps({"operations": [operation] * 100}, separators=(",", ":"))
    padding = 1024 * 1024 + 1 - len(envelope.encode())
    body = envelope.replace('"Name":"x"', '"Name":"x' + "y" * padding + '"', 1)
    assert len(body.encode()) == 1024 * 1024 + 1
    over = crm.post("/customers/batch", content=body, headers={"Content-Type": "application/json"})
    assert over.status_code == 413 and over.json()["detail"].startswith("The body is 1048577 bytes")
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"max_body_bytes": 9_000})
    assert crm.post("/customers", json={"Name": "x", "Description": "y" * 9_000}).status_code == 413
    assert crm.post("/customers", json={"Name": "x", "Description": "y" * 8_000}).status_code == 201


def test_the_sandbox_serves_its_contract(crm: httpx.Client) -> None:
    answer = crm.get("/openapi.yaml")
    assert answer.status_code == 200 and answer.text.count("openapi: 3.1.0") == 1
