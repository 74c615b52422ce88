"""The ingest step against both sandboxes: first load, idle cost, edits, deletes,
faults, OAuth rotation mid-run, and bad payloads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from connectors.customcrm import CustomcrmClient, customcrm_client
from connectors.keap import KeapClient, KeapPacer, keap_client
from connectors.tokens import TokenStore
from pipelines.common import ExtractReport
from pipelines.ingest import IngestOptions, extract
from sandbox.bundle import Sandboxes
from tests.conftest import admin

KEAP_TABLES = ("companies", "contacts", "opportunities", "products")
CRM_TABLES = ("customers", "contacts", "orders", "products")


@dataclass
class Ingest:
    boxes: Sandboxes
    db: Path
    state: Path
    keap: KeapClient
    crm: CustomcrmClient

    def run(self, **options: Any) -> dict[str, ExtractReport]:
        reports = extract(self.db, self.state, self.keap, self.crm, IngestOptions(**options))
        return {r.system: r for r in reports}

    def sql(self, query: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.sql(query).fetchall()

    def served(self) -> tuple[dict, dict]:
        """What each sandbox answered since the last reset (counted at the sandbox)."""
        with httpx.Client() as client:
            keap = admin(client, self.boxes.keap_root, "/_sandbox/stats")
            crm = admin(client, self.boxes.customcrm_root, "/_sandbox/stats")
            admin(client, self.boxes.keap_root, "/_sandbox/stats/reset", {})
            admin(client, self.boxes.customcrm_root, "/_sandbox/stats/reset", {})
        return keap, crm


def _no_sleep(seconds: float) -> None:
    return None


@contextmanager
def unpaced_ingest(
    sandboxes: Sandboxes,
    tmp_path: Path,
    size: int,
    seed: int,
    customcrm: dict[str, Any] | None = None,
    keap: dict[str, Any] | None = None,
) -> Iterator[Ingest]:
    """An ingest of `size` demo records of each kind, its clients never waiting (Keap's
    pacing far above the sandbox's); `customcrm`, `keap`: the sandboxes' settings."""
    sandboxes.seed_demo(size=size, seed=seed)
    keap_api = keap_client(
        base_url=sandboxes.keap_url,
        api_key=sandboxes.keap.credentials.api_key,
        pacer=KeapPacer(per_second=1000, per_minute=100000),
        sleep=_no_sleep,
    )
    crm = customcrm_client(
        base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token, sleep=_no_sleep
    )
    with httpx.Client() as client:
        if customcrm:
            admin(client, sandboxes.customcrm_root, "/_sandbox/config", customcrm)
        if keap:
            admin(client, sandboxes.keap_root, "/_sandbox/config", keap)
    try:
        yield Ingest(sandboxes, tmp_path / "crmsync.duckdb", tmp_path / "crmsync.state", keap_api, crm)
    finally:
        keap_api.close()
        crm.close()


@pytest.fixture
def ingest(sandboxes: Sandboxes, tmp_path: Path) -> Iterator[Ingest]:
    with unpaced_ingest(sandboxes, tmp_path, 1200, 5, customcrm={"limits": "off"}) as found:
        yield found


def _crm_live_count(boxes: Sandboxes, resource: str) -> int:
    return boxes.customcrm.store.counts()[resource]["live"]


def test_first_run_loads_everything_then_an_idle_run_costs_one_request_per_resource(ingest: Ingest) -> None:
    reports = ingest.run()
    for table in KEAP_TABLES:
        assert ingest.sql(f"select count(*), count(distinct id) from raw_keap.{table}") == [(1200, 1200)]
        assert reports["keap"].resources[table].pages == 2  # 1000 a page
    for table in CRM_TABLES:
        expected = _crm_live_count(ingest.boxes, table)
        assert ingest.sql(f"select count(*) from raw_customcrm.{table}") == [(expected,)]
    assert ingest.sql("select count(*) from raw_keap.stages") == [(8,)]

    ingest.served()
    idle = ingest.run()
    keap_served, crm_served = ingest.served()
    assert keap_served["by_endpoint"] == {
        "GET /companies": 1,
        "GET /contacts": 1,
        "GET /opportunities": 1,
        "GET /products": 1,
        "GET /opportunities/stages": 1,
    }
    assert crm_served["by_endpoint"] == {f"GET /{t}": 1 for t in CRM_TABLES}
    assert all(r.records == 0 for name, r in idle["keap"].resources.items() if name != "stages")
    assert all(r.records == 0 for r in idle["customcrm"].resources.values())


def _edit_everything(boxes: Sandboxes) -> dict[str, str]:
    key = {"X-Keap-API-Key": boxes.keap.credentials.api_key}
    bearer = {"Authorization": f"Bearer {boxes.customcrm.credentials.token}"}
    edited = {}
    with httpx.Client(headers=key) as keap:
        for resource, body in [
            ("companies", {"notes": "edited"}),
            ("contacts", {"job_title": "edited"}),
            ("opportunities", {"opportunity_notes": "edited"}),
            ("products", {"description": "edited"}),
        ]:
            record_id = "1" + str(list(KEAP_TABLES).index(resource) + 1) + "05"  # an old record: 1105 ...
            record_id = {
                "companies": "2500",
                "contacts": "1500",
                "opportunities": "3500",
                "products": "4500",
            }[resource]
            answer = keap.patch(f"{boxes.keap_url}/{resource}/{record_id}", json=body)
            assert answer.status_code == 200, answer.text
            edited[f"keap.{resource}"] = record_id
    with httpx.Client(headers=bearer) as crm:
        for resource in CRM_TABLES:
            first = crm.get(f"{boxes.customcrm_url}/{resource}", params={"limit": 1}).json()["data"][0]
            field = {
                "customers": "Description",
                "contacts": "Title",
                "orders": "Description",
                "products": "Description",
            }[resource]
            assert (
                crm.patch(
                    f"{boxes.customcrm_url}/{resource}/{first['Id']}", json={field: "edited"}
                ).status_code
                == 200
            )
            edited[f"customcrm.{resource}"] = first["Id"]
    return edited


def test_an_edit_on_each_resource_is_picked_up_by_the_next_run_and_only_it(ingest: Ingest) -> None:
    ingest.run()
    edited = _edit_everything(ingest.boxes)
    ingest.served()
    reports = ingest.run()
    keap_served, crm_served = ingest.served()
    assert keap_served["total"] == 5 and crm_served["total"] == 4  # still one request each
    for table in KEAP_TABLES:
        assert reports["keap"].resources[table].records == 1
        payload = ingest.sql(f"select payload from raw_keap.{table} where id = '{edited['keap.' + table]}'")
        assert "edited" in payload[0][0]
    for table in CRM_TABLES:
        assert reports["customcrm"].resources[table].records == 1
        payload = ingest.sql(
            f"select payload from raw_customcrm.{table} where id = '{edited['customcrm.' + table]}'"
        )
        assert "edited" in payload[0][0]


def test_nested_arrays_reach_duckdb_intact(ingest: Ingest) -> None:
    ingest.run()
    contact = ingest.boxes.keap.store.query("contacts", [], "id", 0, 10_000)
    with_second_email = next(doc for doc, _, _ in contact if len(doc["email_addresses"]) > 1)
    payload = json.loads(
        ingest.sql(f"select payload from raw_keap.contacts where id = '{with_second_email['id']}'")[0][0]
    )
    assert payload["email_addresses"] == [  # as Keap answers: each email with its opt-in status
        {**email, "is_opt_in": False, "email_opt_status": "UNENGAGED_MARKETABLE"}
        for email in with_second_email["email_addresses"]
    ]
    assert payload.get("addresses") == with_second_email.get("addresses")
    company = ingest.sql(
        "select payload from raw_keap.companies where payload->>'$.address.line1' is not null limit 1"
    )
    assert json.loads(company[0][0])["update_time"]  # the fields companies hide unless asked for


def test_deletes_on_both_sides_are_marked_never_dropped(ingest: Ingest) -> None:
    ingest.run()
    key = {"X-Keap-API-Key": ingest.boxes.keap.credentials.api_key}
    assert httpx.delete(f"{ingest.boxes.keap_url}/contacts/1007", headers=key).status_code == 204
    bearer = {"Authorization": f"Bearer {ingest.boxes.customcrm.credentials.token}"}
    customer = httpx.get(f"{ingest.boxes.customcrm_url}/customers", headers=bearer).json()["data"][0]
    assert (
        httpx.delete(f"{ingest.boxes.customcrm_url}/customers/{customer['Id']}", headers=bearer).status_code
        == 204
    )

    reports = ingest.run()  # incremental: Customcrm's tombstone arrives, Keap's deletion cannot be seen yet
    assert reports["customcrm"].resources["customers"].deleted == 1
    assert ingest.sql("select resource, id from raw_customcrm.tombstones") == [("customers", customer["Id"])]
    assert ingest.sql(f"select count(*) from raw_customcrm.customers where id = '{customer['Id']}'") == [(1,)]
    assert not reports["keap"].full_pass

    reports = ingest.run(full_pass=True)  # lists ids only, and marks what is gone
    assert reports["keap"].full_pass and reports["keap"].resources["contacts"].deleted == 1
    assert ingest.sql("select resource, id from raw_keap.deletions") == [("contacts", "1007")]
    assert ingest.sql("select count(*) from raw_keap.contacts where id = '1007'") == [(1,)]
    again = ingest.run(full_pass=True)  # already marked: not counted again
    assert again["keap"].resources["contacts"].deleted == 0


def test_the_full_pass_runs_on_its_schedule(ingest: Ingest) -> None:
    passes = [ingest.run(full_pass_every=3)["keap"].full_pass for _ in range(6)]
    assert passes == [False, False, True, False, False, True]


def test_a_429_storm_and_5xx_faults_are_survived_without_losing_or_duplicating_rows(ingest: Ingest) -> None:
    faults = {"faults": {"error_429": 0.3, "error_500": 0.2, "seed": 8}}
    admin(httpx.Client(), ingest.boxes.keap_root, "/_sandbox/config", faults)
    admin(httpx.Client(), ingest.boxes.customcrm_root, "/_sandbox/config", faults)
    reports = ingest.run()
    assert reports["keap"].retries > 0 and reports["keap"].rate_limited > 0
    assert reports["customcrm"].retries > 0
    assert not reports["keap"].errors and not reports["customcrm"].errors
    for table in KEAP_TABLES:
        assert ingest.sql(f"select count(*), count(distinct id) from raw_keap.{table}") == [(1200, 1200)]
    for table in CRM_TABLES:
        expected = _crm_live_count(ingest.boxes, table)
        assert ingest.sql(f"select count(*), count(distinct id) from raw_customcrm.{table}") == [
            (expected, expected)
        ]


def test_an_oauth_refresh_mid_run_rotates_and_persists_the_token(ingest: Ingest, tmp_path: Path) -> None:
    boxes = ingest.boxes
    tokens = admin(httpx.Client(), boxes.keap_root, "/_sandbox/oauth/issue", {})
    store = TokenStore(tmp_path / "crmsync.state" / "keap_oauth.json")
    creds = boxes.keap.credentials
    ingest.keap = keap_client(
        base_url=boxes.keap_url,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        client_id=creds.client_id,
        client_secret=creds.client_secret,
        token_url=boxes.keap_root + "/token",
        token_store=store,
        sleep=_no_sleep,
    )
    pages_seen = []

    def expire_after_first_page(system: str, resource: str, pages: int, records: int) -> None:
        pages_seen.append((system, resource, pages))
        if len(pages_seen) == 1:
            admin(httpx.Client(), boxes.keap_root, "/_sandbox/oauth/expire", {})

    extract(ingest.db, ingest.state, ingest.keap, ingest.crm, progress=expire_after_first_page)
    assert ingest.keap.http.auth.refreshes == 1  # type: ignore[attr-defined]
    saved = json.loads(store.path.read_text())
    assert saved["refresh_token"] not in (None, tokens["refresh_token"])
    for table in KEAP_TABLES:
        assert ingest.sql(f"select count(*) from raw_keap.{table}") == [(1200,)]


class _Tamper(httpx.BaseTransport):
    """Forwards to the sandbox and spoils chosen answers."""

    def __init__(self, spoil: Any) -> None:
        self.inner = httpx.HTTPTransport()
        self.spoil = spoil
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.calls += 1
        return self.spoil(request, response) or response


def test_a_record_without_an_id_is_recorded_with_resource_page_and_field_and_the_rest_loads(
    ingest: Ingest,
) -> None:
    def drop_an_id(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.url.path.endswith("/contacts") and "contact_id>" in request.url.params.get("filter", ""):
            body = response.json()
            del body["contacts"][3]["id"]
            return httpx.Response(200, json=body, headers={"content-type": "application/json"})
        return None

    ingest.keap = keap_client(
        base_url=ingest.boxes.keap_url,
        api_key=ingest.boxes.keap.credentials.api_key,
        transport=_Tamper(drop_an_id),
        sleep=_no_sleep,
    )
    reports = ingest.run()
    assert reports["keap"].resources["contacts"].rejected == 1
    assert ingest.sql("select count(*) from raw_keap.contacts") == [(1199,)]
    assert ingest.sql("select resource, page, field, reason from raw_keap.ingest_rejections") == [
        ("contacts", 2, "id", "missing id")
    ]


def test_a_page_that_does_not_parse_keeps_what_was_loaded_and_does_not_advance(ingest: Ingest) -> None:
    broken = {"on": True}

    def spoil_page_two(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        second_page = "company_id>" in request.url.params.get("filter", "")
        if broken["on"] and request.url.path.endswith("/companies") and second_page:
            return httpx.Response(
                200, content=b'{"companies": [ {"id": ', headers={"content-type": "application/json"}
            )
        return None

    ingest.keap = keap_client(
        base_url=ingest.boxes.keap_url,
        api_key=ingest.boxes.keap.credentials.api_key,
        transport=_Tamper(spoil_page_two),
        sleep=_no_sleep,
    )
    reports = ingest.run()
    (error,) = reports["keap"].errors
    assert "keap.companies" in error and "companies page 2 does not parse" in error
    # the page already read is kept, and the other resources loaded in full
    assert ingest.sql("select count(*) from raw_keap.companies") == [(1000,)]
    assert ingest.sql("select count(*) from raw_keap.contacts") == [(1200,)]
    assert ingest.sql("select resource, page, field from raw_keap.ingest_rejections") == [
        ("companies", 2, "(page)")
    ]
    broken["on"] = False
    reports = ingest.run()  # the walk resumes after the last id it reached: the rest is read
    assert not reports["keap"].errors
    assert reports["keap"].resources["companies"].records == 200
    assert ingest.sql("select count(*), count(distinct id) from raw_keap.companies") == [(1200, 1200)]
