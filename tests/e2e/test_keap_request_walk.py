"""Every request the product's Keap client sends, checked against Keap's own document.

The walk drives the product through everything it does with Keap, against the
sandboxes, recording each request on the wire (a transport around the client's):
the first ingest and the incremental ones, the full pass that lists ids, the reverse
flow's creates (and, their answers lost, the search that finds them again), the
push's re-read before writing, PATCHes whose update_mask covers every Keap property a
mapping can write, deletes of counterparts, and the direct reads that confirm a
deletion the full pass found. Each request is then checked with tests/keap_openapi.py
(apart from the sandbox's own checks), and the walk is asserted to have covered every
operation and every mask property, so it cannot silently stop covering one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import crmsync.run
import registry
from crmsync.run import SyncOutcome
from pipelines.ingest import IngestOptions
from reverse_etl.keap_watch import KeapWatch
from reverse_etl.push import Pusher
from sandbox.keap.app import API_PREFIX
from tests.conftest import REPO, admin
from tests.e2e.conftest import World
from tests.keap_openapi import document, match_operation, request_problems

KEAP_RESOURCE = {m.name: m.keap.name for m in registry.MAPPINGS}
MAPPINGS = tuple(KEAP_RESOURCE)  # customers, contacts, orders, products
ONE = {"companies": "company_id", "contacts": "contact_id", "opportunities": "opportunity_id",
       "products": "product_id"}  # fmt: skip
# What the product sends to Keap. The reverse flow creates no opportunity (orders are not
# created in Keap), so POST /opportunities is the one operation of the subset it never sends.
EXPECTED_OPERATIONS = {
    *(f"GET /{r}" for r in ONE),
    *(f"{m} /{r}/{{{i}}}" for r, i in ONE.items() for m in ("GET", "PATCH", "DELETE")),
    "POST /companies",
    "POST /contacts",
    "POST /products",
    "GET /opportunities/stages",
}
NEVER_SENT = {"POST /opportunities"}
LOST = "creates whose answers were lost"


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    body: bytes | None
    phase: str

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query, keep_blank_values=True)

    def operation(self) -> str | None:
        found = match_operation(self.method, urlsplit(self.url).path, API_PREFIX)
        return f"{self.method} {found[0]}" if found else None


class Recorder:
    """The requests a Keap client sent, each with the phase of the sync it belongs to."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.current = "push"
        self.lock = threading.Lock()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before, self.current = self.current, name
        try:
            yield
        finally:
            self.current = before

    def transport(self) -> httpx.BaseTransport:
        return _Recording(self)


class _Recording(httpx.BaseTransport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = Sent(request.method, str(request.url), request.read() or None, self.recorder.current)
        with self.recorder.lock:
            self.recorder.sent.append(sent)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _keap_properties(resource: str) -> set[str]:
    """The Keap properties the push can write for a mapping, from its dbt model (sync_keap__*)."""
    sql = (REPO / "dbt_project" / "models" / "marts" / f"sync_keap__{resource}.sql").read_text()
    found = set(re.findall(r"'property':\s*'(\w+)'", sql))
    assert found, f"no Keap property found in sync_keap__{resource}.sql"
    return found


class Walk:
    def __init__(self, world: World, recorder: Recorder) -> None:
        self.world, self.recorder = world, recorder
        self.outcomes: dict[str, SyncOutcome] = {}

    def sync(self, label: str, **kw: Any) -> SyncOutcome:
        outcome = self.world.sync(keap_transport=self.recorder.transport(), **kw)
        self.outcomes[label] = outcome
        return outcome

    def links(self, mapping: str) -> dict[str, str]:
        """customcrm id -> keap id"""
        rows = self.world.sql(
            f"select customcrm_id, keap_id from sync_state.links where mapping = '{mapping}' order by keap_id"
        )
        return dict(rows)  # type: ignore[arg-type]

    def keap_faults(self, **faults: Any) -> None:
        admin(self.world.keap, self.world.boxes.keap_root, "/_sandbox/config", {"faults": faults})

    # --- steps ------------------------------------------------------------------------
    def customcrm_only_records(self) -> None:
        """One Customcrm record per created mapping with no Keap counterpart: the reverse flow
        creates each in Keap. Keap requires a short description to create a product, so the
        demo's Customcrm-only products get one (without, the push sends a create that Keap's
        document does not allow, and Keap refuses it)."""
        crm = self.world.crm
        linked = set(self.links("products"))
        for product in self.world.crm_all("products"):
            if product["Id"] not in linked and not product.get("ShortDescription"):
                answer = crm.patch(
                    f"/products/{product['Id']}", json={"ShortDescription": "made in Customcrm"}
                )
                assert answer.status_code == 200, answer.text
        customer = next(iter(self.links("customers")))
        for path, body in (
            ("/customers", {"Name": "Walk Created Customer AS", "Email": "post@walk-created.example"}),
            (
                "/contacts",
                {
                    "FirstName": "Walk",
                    "LastName": "Created",
                    "Email": "walk.created@walk.example",
                    "CustomerId": customer,
                },
            ),
            (
                "/products",
                {
                    "Name": "Walk Created Product",
                    "Sku": "WALK-CREATED",
                    "Price": "12.50",
                    "ShortDescription": "made in Customcrm",
                },
            ),
        ):
            answer = crm.post(path, json=body)
            assert answer.status_code == 201, answer.text

    def edit_every_mapped_field(self) -> None:
        """A linked record of each mapping, every mapped field changed in Customcrm: the push
        PATCHes Keap with each Keap property the mapping writes."""
        crm = self.world.crm
        customers, contacts = self.links("customers"), self.links("contacts")
        customer_id = sorted(customers)[1]
        other_customer = sorted(customers)[2]
        contact_id = sorted(contacts)[1]
        other_contact = sorted(contacts)[2]
        order_id = sorted(self.links("orders"))[1]
        product_id = sorted(self.links("products"))[1]

        def other_country(current: str | None) -> str:
            return "SE" if current != "SE" else "DK"

        customer = crm.get(f"/customers/{customer_id}").json()
        contact = crm.get(f"/contacts/{contact_id}").json()
        order = crm.get(f"/orders/{order_id}").json()
        product = crm.get(f"/products/{product_id}").json()
        edits = {
            f"/customers/{customer_id}": {
                "Name": "Walk Edited Customer AS",
                "Description": "edited by the walk",
                "Website": "https://walk-edited.example",
                "Email": "post@walk-edited.example",
                "Phone": "+47 21 00 00 01",
                "Fax": "+47 21 00 00 02",
                "StreetAddress1": "Walkveien 1",
                "StreetAddress2": "Oppgang B",
                "City": "Walkby",
                "ZipCode": "0123",
                "Country": other_country(customer.get("Country")),
            },
            f"/contacts/{contact_id}": {
                "FirstName": "Walkfirst",
                "LastName": "Walklast",
                "Email": "walk.edited@walk.example",
                "Phone": "+47 900 00 001",
                "Title": "Walk Title",
                "CustomerId": other_customer if contact.get("CustomerId") != other_customer else customer_id,
                "StreetAddress1": "Walkgata 2",
                "StreetAddress2": "H0101",
                "City": "Walkstad",
                "ZipCode": "4321",
                "Country": other_country(contact.get("Country")),
                "BirthDate": "1971-07-07",
            },
            f"/orders/{order_id}": {
                "Title": "Walk Edited Order",
                "ContactId": other_contact if order.get("ContactId") != other_contact else contact_id,
                "Status": "lost" if order.get("Status") == "won" else "won",
                "Stage": None,  # the stage the status names (seeds/stage_status.csv)
                "Amount": "4321.00",
                "CloseDate": "2031-03-03",
                "Description": "edited by the walk",
            },
            f"/products/{product_id}": {
                "Name": "Walk Edited Product",
                "Sku": "WALK-EDITED",
                "Description": "edited by the walk",
                "ShortDescription": "walk short",
                "Price": "77.70",
                "Active": not product.get("Active", True),
            },
        }
        for path, body in edits.items():
            answer = crm.patch(path, json=body)
            assert answer.status_code == 200, (path, answer.text)

    def delete_on_both_sides(self) -> None:
        """A linked record of each mapping deleted in Customcrm (the push deletes it in Keap),
        and another deleted in Keap (the full pass misses it among the ids and confirms the
        deletion with a direct read)."""
        for mapping, resource in KEAP_RESOURCE.items():
            links = self.links(mapping)
            customcrm_id = sorted(links)[-1]
            answer = self.world.crm.delete(f"/{mapping}/{customcrm_id}")
            assert answer.status_code == 204, answer.text
            keap_id = links[sorted(links)[0]]
            answer = self.world.keap.delete(f"/{resource}/{keap_id}")
            assert answer.status_code == 204, answer.text

    def run(self) -> None:
        reverse = {"create_in_keap": True}
        self.sync("first", variables={"create_in_keap": False})  # the first ingest; Keap -> Customcrm
        self.customcrm_only_records()
        self.keap_faults(commit_then_fail=1.0, seed=1)  # every Keap write applied, its answer lost
        self.sync(LOST, variables=reverse)
        self.keap_faults()
        self.edit_every_mapped_field()
        self.sync("found again, patched", variables=reverse)
        self.delete_on_both_sides()
        self.sync(
            "deletes, full pass",
            variables={"delete_counterparts": dict.fromkeys(MAPPINGS, True)},
            ingest=IngestOptions(full_pass=True),
        )


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A recorder that knows which part of a sync each request comes from."""
    found = Recorder()

    def tagged(name: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with found.phase(name):
                return method(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(crmsync.run, "run_extract", tagged("ingest", crmsync.run.run_extract))
    monkeypatch.setattr(KeapWatch, "reread", tagged("re-read", KeapWatch.reread))  # before each chunk
    monkeypatch.setattr(Pusher, "_resolve_keap_intents", tagged("search", Pusher._resolve_keap_intents))
    return found


def test_every_request_of_the_keap_client_is_one_keaps_document_allows(
    world: World, recorder: Recorder
) -> None:
    walk = Walk(world, recorder)
    try:
        walk.run()
        failed = None
    except Exception as exc:  # the requests said first, then what stopped the walk
        failed = exc
    sent = recorder.sent
    assert len(sent) > 50, f"the walk sent only {len(sent)} Keap requests"

    problems: dict[str, list[str]] = {}
    for request in sent:
        for problem in request_problems(request.method, request.url, request.body, API_PREFIX):
            problems.setdefault(problem, []).append(f"{request.phase}: {request.method} {request.url}")
    assert not problems, "requests Keap's document does not allow:\n" + "\n".join(
        f"- {problem}\n    e.g. {where[0]} ({len(where)} such)" for problem, where in problems.items()
    )
    if failed is not None:
        raise failed
    for label, outcome in walk.outcomes.items():
        if label == LOST:  # the creates failed as far as the push knows; the next run finds them
            failed_creates = {m for m, s in outcome.push.mappings.items() if s.failed}
            assert failed_creates >= {"customers", "contacts", "products"}, outcome.push.as_dict()
        else:
            assert outcome.status == "ok", (label, outcome.error, outcome.push.rejections)

    # every operation the product sends, and nothing of the subset left unexplained
    seen = {request.operation() for request in sent}
    assert seen >= EXPECTED_OPERATIONS, f"never sent: {sorted(EXPECTED_OPERATIONS - seen)}"
    assert set(document()["operations"]) - EXPECTED_OPERATIONS == NEVER_SENT

    # every Keap property each mapping can write went out in an update_mask
    for mapping, resource in KEAP_RESOURCE.items():
        masked = {
            name
            for request in sent
            if request.operation() == f"PATCH /{resource}/{{{ONE[resource]}}}"
            for value in request.query.get("update_mask", [])
            for name in value.split(",")
        }
        missing = _keap_properties(resource) - masked
        assert not missing, f"{mapping}: no PATCH had {sorted(missing)} in its update_mask"

    # each way of reading: the incremental ingest (with its filter where Keap has one), the
    # ids-only full pass, the push's re-read before writing, the search for lost creates
    lists = [r for r in sent if r.method == "GET" and r.operation() in {f"GET /{x}" for x in ONE}]
    for how in (m.keap for m in registry.MAPPINGS):
        resource = how.name
        reads = [r for r in lists if r.phase == "ingest" and urlsplit(r.url).path.endswith(f"/{resource}")]
        if how.time_filter:
            assert any(f"{how.time_filter}==" in v for r in reads for v in r.query.get("filter", [])), (
                f"{resource}: no incremental read"
            )
        if how.newest_first:
            assert any(how.newest_first in r.query.get("order_by", []) for r in reads), resource
        assert any(r.phase == "re-read" and urlsplit(r.url).path.endswith(f"/{resource}") for r in lists), (
            f"{resource}: the push never re-read it before writing"
        )
    for spec in (m.keap for m in registry.MAPPINGS):
        if spec.narrowable:
            assert any(
                r.query.get("fields") == ["id"] and urlsplit(r.url).path.endswith(f"/{spec.name}")
                for r in lists
            ), f"{spec.name}: no ids-only list (the full pass)"
    confirmed = {r.operation() for r in sent if r.phase == "ingest" and r.method == "GET"} - {
        f"GET /{x}" for x in ONE
    }
    assert confirmed >= {f"GET /{r}/{{{i}}}" for r, i in ONE.items()}, (
        "a deletion not confirmed by a direct read"
    )
    searched = {urlsplit(r.url).path.rsplit("/", 1)[1] for r in lists if r.phase == "search"}
    assert searched == {"companies", "contacts", "products"}, searched
