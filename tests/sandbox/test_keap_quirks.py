"""Keap's behaviour, quirks included, as the sandbox reproduces it."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from sandbox.bundle import Sandboxes
from sandbox.timefmt import parse_ts
from tests.conftest import admin


def _contact(keap: httpx.Client, email: str, **extra: object) -> dict:
    body = {"given_name": "Test", "email_addresses": [{"email": email, "field": "EMAIL1"}], **extra}
    answer = keap.post("/contacts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _all_pages(keap: httpx.Client, path: str, key: str, **params: object) -> tuple[list[dict], int]:
    items, pages, token = [], 0, None
    while True:
        answer = keap.get(path, params={**params, **({"page_token": token} if token else {})})
        assert answer.status_code == 200, answer.text
        pages += 1
        items += answer.json()[key]
        token = answer.json().get("next_page_token")
        if not token:
            return items, pages
        if token.startswith("http"):  # Keap once sent whole URLs as tokens
            token = parse_qs(urlparse(token).query)["page_token"][0]


def test_paging_visits_every_record_once_with_page_size_at_most_1000(
    sandboxes: Sandboxes, keap: httpx.Client
) -> None:
    sandboxes.seed_demo(size=2345, seed=1)
    items, pages = _all_pages(keap, "/contacts", "contacts", page_size=1000)
    assert pages == 3
    ids = [c["id"] for c in items]
    assert len(ids) == len(set(ids)) == 2345
    assert keap.get("/contacts", params={"page_size": 1001}).status_code == 400
    assert keap.get("/contacts", params={"page_token": "not-a-token"}).status_code == 400


def test_the_end_of_a_list_is_an_empty_or_absent_token(keap: httpx.Client) -> None:
    _contact(keap, "a@x.example")
    assert keap.get("/contacts").json()["next_page_token"] == ""
    keap.post("/products", json={"name": "P", "price": 1, "short_description": "p"})
    assert "next_page_token" not in keap.get("/products").json()


def test_page_tokens_can_be_whole_urls(sandboxes: Sandboxes, keap: httpx.Client) -> None:
    sandboxes.seed_demo(size=30, seed=1)
    admin(keap, sandboxes.keap_root, "/_sandbox/config", {"page_token_style": "url"})
    first = keap.get("/companies", params={"page_size": 10}).json()
    assert first["next_page_token"].startswith(sandboxes.keap_url + "/companies?")
    items, pages = _all_pages(keap, "/companies", "companies", page_size=10)
    assert (len(items), pages) == (30, 3)


def test_contacts_filter_by_start_update_time_and_ids(keap: httpx.Client) -> None:
    old = _contact(keap, "old@x.example")
    new = _contact(keap, "new@x.example")
    since = new["update_time"]
    found = keap.get("/contacts", params={"filter": f"start_update_time=={since}"}).json()["contacts"]
    assert [c["id"] for c in found] == [new["id"]]
    found = keap.get("/contacts", params={"filter": f"ids=={old['id']},{new['id']}"}).json()["contacts"]
    assert {c["id"] for c in found} == {old["id"], new["id"]}
    # filter timestamps must be full ISO-8601 with milliseconds and a zone
    answer = keap.get("/contacts", params={"filter": "start_update_time==2026-01-01"})
    assert answer.status_code == 400 and answer.json()["code"] == 400
    assert keap.get("/contacts", params={"filter": "no_such_field==1"}).status_code == 400


def test_companies_filter_by_since_time_and_hide_fields_unless_asked(keap: httpx.Client) -> None:
    body = {
        "company_name": "Acme",
        "notes": "n",
        "address": {"line1": "1 Main St", "country_code": "USA", "zip_code": "78701"},
        "email_address": {"email": "a@acme.example"},
        "phone_number": {"number": "555"},
        "fax_number": {"number": "556"},
    }
    created = keap.post("/companies", json=body).json()
    listed = keap.get("/companies").json()["companies"][0]
    assert set(listed) == {"id", "company_name"}  # address, email, phone, fax, notes, update_time left out
    fields = "company_name,address,email_address,phone_number,fax_number,notes,update_time"
    listed = keap.get("/companies", params={"fields": fields}).json()["companies"][0]
    assert listed["address"]["zip_code"] == "78701" and listed["notes"] == "n"
    assert listed["update_time"] == created["update_time"]
    since = keap.get("/companies", params={"filter": f"since_time=={created['update_time']}"}).json()
    assert [c["id"] for c in since["companies"]] == [created["id"]]
    later = "2999-01-01T00:00:00.000Z"
    assert keap.get("/companies", params={"filter": f"since_time=={later}"}).json()["companies"] == []


@pytest.mark.parametrize(
    ("resource", "order_by", "stamp"),
    [
        ("opportunities", "update_time desc", "last_updated_time"),
        ("products", "last_updated_time desc", "update_time"),
        ("contacts", "update_time asc", "update_time"),
    ],
)
def test_order_by_update_time(
    sandboxes: Sandboxes, keap: httpx.Client, resource: str, order_by: str, stamp: str
) -> None:
    sandboxes.seed_demo(size=50, seed=2)
    items = keap.get(f"/{resource}", params={"order_by": order_by, "page_size": 1000}).json()[resource]
    stamps = [parse_ts(item[stamp]) for item in items]
    assert stamps == sorted(stamps, reverse=order_by.endswith("desc"))
    assert keap.get(f"/{resource}", params={"order_by": "shoe_size desc"}).status_code == 400


def test_timestamps_come_in_both_keap_forms(keap: httpx.Client) -> None:
    contact = _contact(keap, "t@x.example")
    opp = keap.post(
        "/opportunities", json={"contact_id": contact["id"], "opportunity_title": "T", "stage_id": "10"}
    ).json()
    assert contact["update_time"].endswith("Z")
    assert opp["last_updated_time"].endswith("+0000")  # no colon in the zone
    assert abs((parse_ts(opp["last_updated_time"]) - parse_ts(contact["update_time"])).total_seconds()) < 60


def test_patch_replaces_whole_arrays_and_update_mask_limits_the_change(keap: httpx.Client) -> None:
    contact = _contact(
        keap,
        "one@x.example",
        job_title="Buyer",
        phone_numbers=[{"number": "1", "field": "PHONE1"}, {"number": "2", "field": "PHONE2"}],
    )
    two_emails = [
        {"email": "one@x.example", "field": "EMAIL1"},
        {"email": "two@x.example", "field": "EMAIL2"},
    ]
    keap.patch(f"/contacts/{contact['id']}", json={"email_addresses": two_emails})
    # a PATCH of EMAIL1 alone drops EMAIL2: arrays are replaced whole
    answer = keap.patch(
        f"/contacts/{contact['id']}",
        params={"update_mask": "email_addresses"},
        json={"email_addresses": [{"email": "new@x.example", "field": "EMAIL1"}], "job_title": "ignored"},
    )
    after = answer.json()
    assert after["email_addresses"] == [  # Keap answers each email with its opt-in status
        {
            "email": "new@x.example",
            "field": "EMAIL1",
            "is_opt_in": False,
            "email_opt_status": "UNENGAGED_MARKETABLE",
        }
    ]
    assert after["job_title"] == "Buyer"  # not in update_mask: unchanged
    assert len(after["phone_numbers"]) == 2
    # a masked property absent from the body is cleared
    cleared = keap.patch(f"/contacts/{contact['id']}", params={"update_mask": "job_title"}, json={}).json()
    assert "job_title" not in cleared
    bad = keap.patch(f"/contacts/{contact['id']}", params={"update_mask": "shoe_size"}, json={})
    assert bad.status_code == 400


def test_price_is_written_in_minor_units_and_read_as_an_object(keap: httpx.Client) -> None:
    product = keap.post("/products", json={"name": "W", "price": 1250, "short_description": "w"}).json()
    assert product["price"] == {"amount": 1250, "currency_code": "USD", "formatted_amount": "$12.50"}
    patched = keap.patch(
        f"/products/{product['id']}", params={"update_mask": "price"}, json={"price": 5}
    ).json()
    assert patched["price"]["amount"] == 5 and patched["price"]["formatted_amount"] == "$0.05"
    answer = keap.patch(f"/products/{product['id']}", json={"price": 12.5})
    assert answer.status_code == 400 and "minor units" in answer.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/contacts",
            {"given_name": "x" * 41, "email_addresses": [{"email": "a@b.example", "field": "EMAIL1"}]},
            "given_name",
        ),
        (
            "/contacts",
            {"email_addresses": [{"email": "not-an-email", "field": "EMAIL1"}]},
            "email_addresses[0].email",
        ),
        ("/contacts", {"given_name": "No way to reach"}, "email_addresses"),
        (
            "/contacts",
            {"addresses": [{"field": "BILLING", "region_code": "US-TX"}]},
            "addresses[0].country_code",
        ),
        (
            "/contacts",
            {"addresses": [{"field": "BILLING", "country_code": "US"}]},
            "addresses[0].country_code",
        ),
        ("/companies", {"notes": "no name"}, "company_name"),
        ("/opportunities", {"opportunity_title": "x", "stage_id": "10"}, "contact_id"),
        ("/products", {"name": "x", "price": 1}, "short_description"),
    ],
)
def test_validation_answers_with_the_v2_error_body(
    keap: httpx.Client, path: str, body: dict, field: str
) -> None:
    answer = keap.post(path, json=body)
    assert answer.status_code == 400
    error = answer.json()
    assert set(error) == {"code", "message", "status", "details"}
    assert error["code"] == 400 and error["status"] == "Bad Request"
    assert field in error["message"]


def test_duplicate_option_email_updates_instead_of_creating(keap: httpx.Client) -> None:
    first = _contact(keap, "dup@x.example")
    body = {"given_name": "Again", "email_addresses": [{"email": "DUP@x.example", "field": "EMAIL1"}]}
    answer = keap.post("/contacts", params={"duplicate_option": "Email"}, json=body)
    assert answer.status_code == 200 and answer.json()["id"] == first["id"]
    assert keap.post("/contacts", json=body).status_code == 201  # without the option: a new contact


def test_auth_by_api_key_header_or_bearer(sandboxes: Sandboxes) -> None:
    key = sandboxes.keap.credentials.api_key
    with httpx.Client(base_url=sandboxes.keap_url) as client:
        assert client.get("/contacts", headers={"X-Keap-API-Key": key}).status_code == 200
        assert client.get("/contacts", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        refused = client.get("/contacts", headers={"X-Keap-API-Key": "wrong"})
        assert refused.status_code == 401
        assert refused.json()["fault"]["detail"]["errorcode"].startswith("keymanagement")
        assert client.get("/contacts").status_code == 401


def _refresh(client: httpx.Client, sandboxes: Sandboxes, refresh_token: str) -> httpx.Response:
    creds = sandboxes.keap.credentials
    basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
    return client.post(
        sandboxes.keap_root + "/token",
        headers={"Authorization": f"Basic {basic}"},
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
    )


def test_oauth_refresh_rotates_the_refresh_token(sandboxes: Sandboxes) -> None:
    with httpx.Client(base_url=sandboxes.keap_url) as client:
        tokens = admin(client, sandboxes.keap_root, "/_sandbox/oauth/issue", {})
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert client.get("/contacts", headers=bearer).status_code == 200
        admin(client, sandboxes.keap_root, "/_sandbox/oauth/expire", {})
        assert client.get("/contacts", headers=bearer).status_code == 401  # access token expired

        fresh = _refresh(client, sandboxes, tokens["refresh_token"])
        assert fresh.status_code == 200
        rotated = fresh.json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        assert (
            client.get(
                "/contacts", headers={"Authorization": f"Bearer {rotated['access_token']}"}
            ).status_code
            == 200
        )

        reused = _refresh(client, sandboxes, tokens["refresh_token"])  # the old one stops working
        assert reused.status_code == 400
        assert reused.json() == {"error": "invalid_request", "error_description": "Invalid Refresh Token"}
        assert _refresh(client, sandboxes, rotated["refresh_token"]).status_code == 200


def test_every_answer_carries_keaps_limit_headers(keap: httpx.Client) -> None:
    for answer in (keap.get("/contacts"), keap.get("/contacts/1"), keap.post("/contacts", json={})):
        for name in (
            "x-keap-product-throttle-available",
            "x-keap-product-throttle-limit",
            "x-keap-product-quota-available",
            "x-keap-product-quota-expiry-time",
            "x-keap-tenant-throttle-limit",
        ):
            assert name in answer.headers, (answer.status_code, name)


def test_published_key_limits_throttle_the_eleventh_request_in_a_second(
    sandboxes: Sandboxes, keap: httpx.Client
) -> None:
    admin(keap, sandboxes.keap_root, "/_sandbox/config", {"limits": "published"})
    answers = [keap.get("/opportunities/stages") for _ in range(14)]
    statuses = [a.status_code for a in answers]
    assert statuses[:10] == [200] * 10
    assert 429 in statuses[10:]
    throttled = next(a for a in answers if a.status_code == 429)
    assert "fault" in throttled.json() or throttled.json()["message"] == "Quota Exceeded"
    assert answers[0].headers["x-keap-product-throttle-limit"] == "240"
    assert int(answers[9].headers["x-keap-product-throttle-available"]) == 230


def test_per_minute_limit_answers_keaps_quota_body(sandboxes: Sandboxes, keap: httpx.Client) -> None:
    admin(keap, sandboxes.keap_root, "/_sandbox/config", {"limits": {"per_minute": 5}})
    statuses = [keap.get("/opportunities/stages").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    body = keap.get("/opportunities/stages").json()
    assert body == {
        "code": "429",
        "message": "Quota Exceeded",
        "status": "Request Throttled",
        "details": None,
    }
