"""The ingest against accounts that move while they are read (issue: ingest loses nothing):
records edited, deleted and created between the pages of a walk, in both paging modes;
full passes that mark only real deletions; clocks that lie; hostile pages; the daily
quota. Each sandbox produces its condition on demand (sandbox.keap.restless)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.errors import ProtocolError
from connectors.keap import KeapPacer, keap_client
from pipelines.common import raw_row, raw_rows
from sandbox.bundle import Sandboxes
from support.times import parse_time
from tests.conftest import admin
from tests.pipelines.test_ingest import KEAP_TABLES, Ingest, _no_sleep, unpaced_ingest

STAMP = {
    "companies": "update_time",
    "contacts": "update_time",
    "opportunities": "last_updated_time",
    "products": "update_time",
}


@pytest.fixture
def ingest(sandboxes: Sandboxes, tmp_path: Path) -> Iterator[Ingest]:
    """60 records of each kind, served ten to a page: every walk takes several pages."""
    with unpaced_ingest(
        sandboxes, tmp_path, 60, 3, customcrm={"limits": "off"}, keap={"max_page_size": 10}
    ) as found:
        yield found


def _keap(ingest: Ingest, settings: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client() as client:
        return admin(client, ingest.boxes.keap_root, "/_sandbox/config", settings)


def _keap_now(ingest: Ingest, resource: str) -> dict[str, str]:
    """id -> update time of every live record, straight from the sandbox's store."""
    live = {}
    for doc, _, update_us in ingest.boxes.keap.store.query(resource, [], "id asc", 0, 10**6):
        live[str(doc["id"])] = update_us
    return {record_id: str(us) for record_id, us in live.items()}


def _assert_latest_versions_loaded(ingest: Ingest) -> None:
    for resource in KEAP_TABLES:
        store = {
            str(doc["id"]): u for doc, _, u in ingest.boxes.keap.store.query(resource, [], "id asc", 0, 10**6)
        }
        loaded = {
            record_id: parse_time(json.loads(payload).get(STAMP[resource]))
            for record_id, payload in ingest.sql(f"select id, payload from raw_keap.{resource}")
        }
        missing = sorted(set(store) - set(loaded), key=int)
        assert not missing, f"{resource}: live records never loaded: {missing}"
        stale = [
            record_id
            for record_id, update_us in store.items()
            if loaded[record_id] is None or int(loaded[record_id].timestamp() * 1000) != update_us // 1000
        ]
        assert not stale, f"{resource}: an older version is loaded for {stale}"


@pytest.mark.parametrize("paging", ["position", "key"])
def test_edits_deletes_and_creates_between_pages_lose_no_record_and_no_version(
    ingest: Ingest, paging: str
) -> None:
    restless = {"resources": list(KEAP_TABLES), "edit": 1, "delete": 1, "create": 1}
    _keap(ingest, {"paging": paging, "restless": restless})
    first = ingest.run()  # the first walk of every resource, the account moving under it
    assert not first["keap"].errors
    # more than a page changes for each resource, then a second walk while it still moves
    with httpx.Client(headers={"X-Keap-API-Key": ingest.boxes.keap.credentials.api_key}) as keap:
        for resource, (name, value) in {
            "companies": ("notes", "bulk edit"),
            "contacts": ("job_title", "bulk edit"),
            "opportunities": ("opportunity_notes", "bulk edit"),
            "products": ("description", "bulk edit"),
        }.items():
            for record_id in list(_keap_now(ingest, resource))[5:30]:
                answer = keap.patch(
                    f"{ingest.boxes.keap_url}/{resource}/{record_id}",
                    params={"update_mask": name},
                    json={name: value},
                )
                assert answer.status_code == 200, answer.text
    second = ingest.run()
    assert not second["keap"].errors
    done = admin(httpx.Client(), ingest.boxes.keap_root, "/_sandbox/restless")
    assert done["edited"] and done["deleted"] and done["created"]  # it really moved
    _keap(ingest, {"restless": {}})
    ingest.run()  # the run after: what changed while the last walk went on
    _assert_latest_versions_loaded(ingest)


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_a_record_read_twice_in_one_load_keeps_its_latest_version(tmp_path: Path, order: str) -> None:
    """Read, edited, read again in the same load (a server that pages by key, an update-time
    order): whichever came first, the later version is what the raw table keeps."""
    import dlt

    extracted = datetime.now(UTC)
    old = raw_row(
        {"id": "7", "update_time": "2026-01-01T00:00:00.000Z", "v": "old"}, "id", "update_time", extracted
    )
    new = raw_row(
        {"id": "7", "update_time": "2026-01-02T00:00:00.000Z", "v": "new"}, "id", "update_time", extracted
    )
    pages = [[old], [new]] if order == "old_first" else [[new], [old]]

    @dlt.resource(name="contacts")
    def contacts() -> Iterator[Any]:
        for rows in pages:
            yield raw_rows("contacts", rows)

    db = tmp_path / "x.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="twice",
        pipelines_dir=str(tmp_path / "dlt"),
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name="raw_keap",
    )
    pipeline.run(contacts(), loader_file_format="jsonl")
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("select json_extract_string(payload, '$.v') from raw_keap.contacts").fetchall() == [
            ("new",)
        ]


@pytest.mark.parametrize("paging", ["position", "key"])
def test_a_full_pass_while_records_move_marks_only_what_keap_confirms_deleted(
    ingest: Ingest, paging: str
) -> None:
    ingest.run()
    _keap(ingest, {"paging": paging, "restless": {"resources": list(KEAP_TABLES), "edit": 1, "delete": 1}})
    reports = ingest.run(full_pass=True)
    assert reports["keap"].full_pass and not reports["keap"].errors
    deleted = admin(httpx.Client(), ingest.boxes.keap_root, "/_sandbox/restless")["deleted"]
    _keap(ingest, {"restless": {}})
    marked = set(ingest.sql("select resource, id from raw_keap.deletions where is_deleted"))
    really_gone = {(d["resource"], d["id"]) for d in deleted}
    # every record marked deleted is gone from Keap; none that lives is marked
    assert marked <= really_gone
    for resource in KEAP_TABLES:
        live = set(_keap_now(ingest, resource))
        assert not {r for res, r in marked if res == resource} & live
    # deletions made during this pass of records it had already listed are found by the next
    ingest.run(full_pass=True)
    marked = set(ingest.sql("select resource, id from raw_keap.deletions where is_deleted"))
    loaded = {(r, i) for r in KEAP_TABLES for (i,) in ingest.sql(f"select id from raw_keap.{r}")}
    assert marked == really_gone & loaded


def test_a_record_marked_deleted_and_read_again_is_live_again(ingest: Ingest) -> None:
    ingest.run()
    contact = next(iter(_keap_now(ingest, "contacts")))
    import duckdb

    with duckdb.connect(str(ingest.db)) as con:  # a mark an earlier version of the sync made wrongly
        con.execute(
            "create table if not exists raw_keap.deletions (resource varchar, id varchar, "
            "detected_at timestamptz, is_deleted boolean, _dlt_load_id varchar, _dlt_id varchar)"
        )
        con.execute("insert into raw_keap.deletions values ('contacts', ?, now(), true, 'x', 'x')", [contact])
    with httpx.Client(headers={"X-Keap-API-Key": ingest.boxes.keap.credentials.api_key}) as keap:
        keap.patch(
            f"{ingest.boxes.keap_url}/contacts/{contact}",
            params={"update_mask": "job_title"},
            json={"job_title": "still here"},
        )
    ingest.run()
    assert ingest.sql(f"select is_deleted from raw_keap.deletions where id = '{contact}'") == [(False,)]


def test_a_future_update_time_does_not_push_the_cursor_past_later_edits(ingest: Ingest) -> None:
    ingest.run()
    first, second = list(_keap_now(ingest, "contacts"))[:2]
    with httpx.Client() as client:
        admin(
            client,
            ingest.boxes.keap_root,
            "/_sandbox/stamp",
            {"resource": "contacts", "id": first, "offset_s": 86400},
        )
    ingest.run()  # loads the record from the future
    with httpx.Client(headers={"X-Keap-API-Key": ingest.boxes.keap.credentials.api_key}) as keap:
        keap.patch(
            f"{ingest.boxes.keap_url}/contacts/{second}",
            params={"update_mask": "job_title"},
            json={"job_title": "edited after the future"},
        )
    reports = ingest.run()
    assert reports["keap"].resources["contacts"].records == 1
    (payload,) = ingest.sql(f"select payload from raw_keap.contacts where id = '{second}'")[0]
    assert json.loads(payload)["job_title"] == "edited after the future"


def test_a_customcrm_write_stamped_before_it_was_visible_is_still_read(ingest: Ingest) -> None:
    """A write stamped earlier than the newest record the sync has read (its transaction
    began before, committed after) is read, as long as its lag is within the overlap. The
    lag is chosen from the time that really passed, so a slow machine changes nothing."""
    window = timedelta(seconds=60)  # the overlap of these runs: the lag stays well inside it
    ingest.run(customcrm_overlap=window)
    bearer = {"Authorization": f"Bearer {ingest.boxes.customcrm.credentials.token}"}
    with httpx.Client(headers=bearer, base_url=ingest.boxes.customcrm_url) as crm:
        customers = crm.get("/customers", params={"limit": 2}).json()["data"]
        newest = crm.patch(f"/customers/{customers[0]['Id']}", json={"Description": "just before the walk"})
        ingest.run(customcrm_overlap=window)  # reads it: its UpdatedAt is now the newest the sync has seen
        passed_ms = (datetime.now(UTC) - parse_time(newest.json()["UpdatedAt"])).total_seconds() * 1000
        with httpx.Client() as client:  # a write stamped when its transaction began, before that one
            admin(client, ingest.boxes.customcrm_root, "/_sandbox/config", {"stamp_lag_ms": passed_ms + 2000})
        late = crm.patch(f"/customers/{customers[1]['Id']}", json={"Description": "committed late"}).json()
        assert late["UpdatedAt"] < crm.get(f"/customers/{customers[0]['Id']}").json()["UpdatedAt"]
    reports = ingest.run(customcrm_overlap=window)
    assert reports["customcrm"].resources["customers"].records == 1
    (payload,) = ingest.sql(f"select payload from raw_customcrm.customers where id = '{customers[1]['Id']}'")[
        0
    ]
    assert json.loads(payload)["Description"] == "committed late"
    ingest.served()
    idle = ingest.run(customcrm_overlap=window)  # the overlap is read again, nothing in it is loaded twice
    _, crm_served = ingest.served()
    assert crm_served["by_endpoint"] == {
        f"GET /{t}": 1 for t in ("customers", "contacts", "orders", "products")
    }
    assert all(r.records == 0 for r in idle["customcrm"].resources.values())


@pytest.mark.parametrize(
    ("kind", "rejected", "error"),
    [
        ("malformed_json", [("contacts", 2, "(page)")], "contacts page 2 does not parse as JSON"),
        ("null_list", [("contacts", 2, "(page)")], "'contacts' is NoneType, not a list"),
        ("url_without_token", [("contacts", 2, "(page)")], "the next-page URL carries no page_token"),
        ("not_objects", [("contacts", 2, "(record)"), ("contacts", 2, "(record)")], None),
        ("bad_timestamp", [("contacts", 2, "update_time")], None),
    ],
)
def test_a_hostile_page_is_recorded_the_rest_loads_and_the_next_run_completes(
    ingest: Ingest, kind: str, rejected: list[tuple[str, int, str]], error: str | None
) -> None:
    _keap(ingest, {"hostile": {"resource": "contacts", "request": 2, "kind": kind}})
    reports = ingest.run()
    errors = reports["keap"].errors
    if error:
        assert len(errors) == 1 and errors[0].startswith("keap.contacts: ") and error in errors[0], errors
    else:
        assert not errors
    got = ingest.sql("select resource, page, field from raw_keap.ingest_rejections order by field")
    assert got == sorted(rejected, key=lambda r: r[2])
    for table in ("companies", "opportunities", "products"):  # the other resources loaded in full
        assert ingest.sql(f"select count(*) from raw_keap.{table}") == [(60,)]
    again = ingest.run()  # the next run goes on where this one stopped
    assert not again["keap"].errors
    loaded = ingest.sql("select count(*) from raw_keap.contacts")[0][0]
    assert loaded == 60 - (1 if kind == "bad_timestamp" else 0) - (2 if kind == "not_objects" else 0)


def test_a_next_page_token_that_repeats_stops_a_token_walk_with_one_clear_error(ingest: Ingest) -> None:
    _keap(ingest, {"hostile": {"resource": "contacts", "request": 2, "kind": "repeat_token"}})
    with pytest.raises(ProtocolError, match="contacts page 2: the next-page token repeats"):
        for _ in ingest.keap.pages("contacts"):
            pass


def test_a_spent_daily_quota_stops_every_keap_read_and_the_next_run_resumes(ingest: Ingest) -> None:
    _keap(ingest, {"limits": {"per_day": 8}})  # the walks take 25 pages: the quota ends part-way
    ingest.served()
    reports = ingest.run()
    keap_served, _ = ingest.served()
    errors = reports["keap"].errors
    assert errors and all("Keap's daily request quota is spent; it resets at" in e for e in errors)
    assert keap_served["by_status"].get("429", 0) <= 1  # nothing more was asked once Keap said so
    assert keap_served["total"] <= 9
    loaded = {t: ingest.sql(f"select count(*) from raw_keap.{t}")[0][0] for t in KEAP_TABLES}
    stopped = {e.split(":")[0].removeprefix("keap.") for e in errors}
    assert stopped and all(loaded.get(t, 0) < 60 for t in stopped if t in loaded)
    assert not reports["customcrm"].errors  # Customcrm is read as usual

    _keap(ingest, {"limits": "off"})  # the next day, the next run (a new process, a new client)
    ingest.keap = keap_client(
        base_url=ingest.boxes.keap_url,
        api_key=ingest.boxes.keap.credentials.api_key,
        pacer=KeapPacer(per_second=1000, per_minute=100000),
        sleep=_no_sleep,
    )
    again = ingest.run()
    assert not again["keap"].errors
    for table in KEAP_TABLES:  # each walk went on where it stopped: nothing was read twice
        assert again["keap"].resources[table].records == 60 - loaded[table], table
        assert ingest.sql(f"select count(*), count(distinct id) from raw_keap.{table}") == [(60, 60)]
