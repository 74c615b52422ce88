"""Near real time, end to end: the Keap sandbox delivers its REST hooks to the receiver,
whose trigger runs the ordinary incremental sync, in this process; no scheduled run.

One world for the module (its first sync is the expensive part), each test on its own
records: an edit reaches Customcrm and a deletion is confirmed and recorded at once, and
the sync's own write that comes back as a hook costs one run that writes nothing; a
receiver that was down catches up through Keap's retries, and past them through the
scheduled sync, which re-verifies what Keap made Inactive; a flood of 10,000 events
causes a bounded number of syncs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.keap_hooks import hooks_client
from crmsync.hooks.files import HookConfig, save_config
from crmsync.hooks.runs import Checked, scheduled_sync
from crmsync.hooks.service import HookService
from crmsync.hooks.subscriptions import Subscriptions
from crmsync.hooks.trigger import TriggerOptions
from crmsync.lock import exclusive
from crmsync.run import SyncOutcome, run_sync
from crmsync.settings import Settings
from pipelines.ingest import IngestOptions
from sandbox.bundle import Sandboxes
from tests.conftest import admin
from tests.e2e.conftest import World

KEAP_DELAY = [0.05, 0.1]  # Keap's 30-60 s, and its retries scaled alike: 0.05-0.1 s, 0.5 s, 3 s
PATIENCE_S = 180  # how long a wait may take before the test fails (never asserted as a figure)


@dataclass
class Hooked:
    world: World
    service: HookService
    outcomes: list[SyncOutcome] = field(default_factory=list)  # every triggered run's
    lines: list[str] = field(default_factory=list)

    def hooks(self) -> dict[str, Any]:
        return admin(self.world.keap, self.world.boxes.keap_root, "/_sandbox/hooks")

    def delivered_and_settled(self) -> bool:
        """Every event the sandbox queued was delivered (or dropped), and the trigger ran what
        they asked for: nothing in flight anywhere."""
        counts = self.hooks()
        done = counts["delivered_objects"] + counts["dropped_objects"] == counts["queued_objects"]
        return done and counts["pending_objects"] == 0 and self.service.trigger.settled()

    def status(self, event_key: str) -> str:
        return next(h["status"] for h in self.hooks()["hooks"] if h["eventKey"] == event_key)

    def scheduled_sync(self) -> tuple[list[Checked], SyncOutcome]:
        """What `crmsync sync` runs where hooks are registered: the check, then the sync with
        the spool's deletions."""
        settings = self.world.settings
        lock = exclusive(settings.db_path, "sync")  # as `crmsync sync` holds it
        lock.__enter__()
        found, checked = self.world.endpoints(), []
        try:
            outcome = scheduled_sync(
                settings, found, lambda ingest: run_sync(settings, found, ingest=ingest), IngestOptions(),
                on_check=checked.append,
            )  # fmt: skip
        finally:
            found.close()
            lock.__exit__(None, None, None)
        return checked, outcome

    def title(self, crm_id: str) -> str | None:
        """A Customcrm contact's Title, read through its API (the DuckDB file is the running
        sync's: the test reads it only while the trigger is idle)."""
        return self.world.crm.get(f"/contacts/{crm_id}").json().get("Title")  # type: ignore[no-any-return]


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooked]:
    tmp = tmp_path_factory.mktemp("hooks")
    boxes = Sandboxes(tmp / "sandbox").start()
    keap = httpx.Client(
        base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap.credentials.api_key}, timeout=30
    )
    crm = httpx.Client(
        base_url=boxes.customcrm_url,
        headers={"Authorization": f"Bearer {boxes.customcrm.credentials.token}"},
        timeout=30,
    )
    boxes.seed_demo(size=25, seed=11)
    admin(crm, boxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    admin(keap, boxes.keap_root, "/_sandbox/config", {"hooks": {"delay_s": KEAP_DELAY, "seed": 7}})
    settings = Settings(
        keap_api_url=boxes.keap_url,
        keap_api_key=boxes.keap.credentials.api_key,
        customcrm_api_url=boxes.customcrm_url,
        customcrm_api_token=boxes.customcrm.credentials.token,
        db_path=tmp / "crmsync.duckdb",
        keap_configured=True,
        customcrm_configured=True,
    )
    world = World(boxes, settings, keap, crm)
    for _ in range(3):  # linked and quiet before any hook
        first = world.sync()
        assert first.status == "ok", first.error
        if first.quiet_since:
            break
    else:
        raise AssertionError("three syncs and never quiet")
    found: list[SyncOutcome] = []

    def triggered(ingest: IngestOptions) -> SyncOutcome:
        with exclusive(settings.db_path, "hooks serve"):  # as crmsync hooks serve runs it
            outcome = world.sync(ingest=ingest)
        found.append(outcome)
        return outcome

    lines: list[str] = []
    service = HookService(
        settings.state_dir,
        triggered,
        options=TriggerOptions(debounce_s=0.5, max_wait_s=5, poll_s=0.05, retry_s=1),
        log=lines.append,
    )
    hooked = Hooked(world, service, found, lines)
    service.start_receiver().start_trigger()
    client = world.endpoints()
    api = hooks_client(client.keap, settings.keap_api_url)
    try:
        report = Subscriptions(api, service.secret, service.hook_url()).register()
        assert report.ok, report.line()
        save_config(settings.state_dir, HookConfig(service.local_url))
    finally:
        api.close()
        client.close()
    try:
        yield hooked
    finally:
        service.stop()
        keap.close()
        crm.close()
        boxes.stop()


def _linked_contacts(world: World, count: int, offset: int) -> list[tuple[str, str]]:
    """(Keap id, Customcrm id) of linked contacts."""
    rows = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id "
        f"limit {count} offset {offset}"
    )
    return [(row[0], row[1]) for row in rows]


def test_an_edit_and_a_deletion_in_keap_arrive_at_once_and_the_echo_costs_one_run_that_writes_nothing(
    hooked: Hooked,
) -> None:
    world = hooked.world
    (edited, crm_edited), (deleted, _), (pushed, crm_pushed) = _linked_contacts(world, 3, 0)
    assert world.crm.patch(f"/contacts/{crm_pushed}", json={"Title": "Set in Customcrm"}).status_code == 200
    before = len(hooked.outcomes)

    assert world.keap.patch(f"/contacts/{edited}", params={"update_mask": "job_title"},
                            json={"job_title": "Edited in Keap"}).status_code == 200  # fmt: skip
    assert world.keap.delete(f"/contacts/{deleted}").status_code == 204

    wait_until(lambda: hooked.title(crm_edited) == "Edited in Keap", "the edit in Customcrm")
    wait_until(hooked.delivered_and_settled, "the hooks delivered and the trigger idle")
    runs = hooked.outcomes[before:]
    first = runs[0]
    keap_report = next(r for r in first.extract if r.system == "keap")
    assert first.status == "ok" and first.push.wrote and not keap_report.full_pass
    assert keap_report.resources["contacts"].deleted == 1  # confirmed by a direct read, no full pass
    assert world.sql(f"select is_deleted from raw_keap.deletions where id = '{deleted}'") == [(True,)]
    assert world.sql(f"select link_status from link_contacts where keap_id = '{deleted}'") == [("orphaned",)]
    # the run wrote the Customcrm edit to Keap too; Keap announced that write as a hook of
    # its own: it cost one more run, which found nothing to write, and nothing after it
    assert world.keap.get(f"/contacts/{pushed}").json()["job_title"] == "Set in Customcrm"
    assert len(runs) == 2, hooked.lines
    assert runs[1].status == "ok" and not runs[1].push.wrote
    assert runs[1].quiet_since is not None  # the quiet-run skip: no dbt, no push


def test_a_deletion_announced_for_a_live_record_is_not_recorded(hooked: Hooked) -> None:
    """A hook is a hint: anyone who knew the URL could send one; Keap's answer decides."""
    world = hooked.world
    ((live, _),) = _linked_contacts(world, 1, 5)
    before = len(hooked.outcomes)
    forged = {"event_key": "contact.delete", "object_type": "contact", "object_keys": [{"id": int(live)}]}
    assert httpx.post(hooked.service.hook_url(), json=forged).status_code == 200
    wait_until(lambda: len(hooked.outcomes) > before and hooked.service.trigger.settled(), "a run")
    assert world.sql(f"select count(*) from raw_keap.deletions where id = '{live}'") == [(0,)]
    assert world.sql(f"select link_status from link_contacts where keap_id = '{live}'") == [("linked",)]


def test_a_receiver_that_was_down_catches_up_through_retries_then_through_the_scheduled_sync(
    hooked: Hooked,
) -> None:
    world, service = hooked.world, hooked.service
    (first, crm_first), (second, crm_second) = _linked_contacts(world, 2, 10)
    failed_before = hooked.hooks()["failed_attempts"]

    service.stop_receiver()  # down: Keap's first attempt fails, a retry finds it up again
    world.keap.patch(
        f"/contacts/{first}", params={"update_mask": "job_title"}, json={"job_title": "While down"}
    )
    wait_until(lambda: hooked.hooks()["failed_attempts"] > failed_before, "a failed delivery")
    service.start_receiver()
    wait_until(lambda: hooked.title(crm_first) == "While down", "the retried hook's sync")
    attempts = [a for a in hooked.hooks()["attempts"] if a["event_key"] == "contact.edit" and a["objects"]]
    assert attempts[-1]["result"] == "200" and attempts[-1]["attempt"] > 1
    wait_until(hooked.delivered_and_settled, "the trigger idle")

    # down past Keap's four attempts: the subscription goes Inactive and the edit's hook is lost
    admin(world.keap, world.boxes.keap_root, "/_sandbox/config", {"hooks": {"delay_s": [0.01, 0.02]}})
    service.stop_receiver()
    world.keap.patch(
        f"/contacts/{second}", params={"update_mask": "job_title"}, json={"job_title": "Lost hook"}
    )
    wait_until(lambda: hooked.status("contact.edit") == "Inactive", "Inactive after the 4th failure")
    admin(world.keap, world.boxes.keap_root, "/_sandbox/config", {"hooks": {"delay_s": KEAP_DELAY}})
    service.start_receiver()
    assert hooked.title(crm_second) != "Lost hook"

    # the scheduled sync: polling brings the edit, and its check re-verifies the subscription
    runs_before = len(hooked.outcomes)
    (checked,), outcome = hooked.scheduled_sync()
    assert outcome.status == "ok" and hooked.title(crm_second) == "Lost hook"
    assert checked.ok, checked.line
    assert checked.line == "hooks: 13 of 13 subscriptions verified, 1 re-verified (Keap had them Inactive)"
    assert hooked.status("contact.edit") == "Verified"
    # ... so hooks come through again
    admin(
        world.keap,
        world.boxes.keap_root,
        "/_sandbox/hooks/emit",
        {"event_key": "contact.edit", "ids": [second]},
    )
    wait_until(
        lambda: len(hooked.outcomes) > runs_before and hooked.delivered_and_settled(), "a triggered run"
    )


def test_a_triggered_sync_waits_while_another_crmsync_holds_the_state(hooked: Hooked) -> None:
    """Under the same lock as `crmsync sync`: never two runs on one state file."""
    world = hooked.world
    wait_until(hooked.delivered_and_settled, "a quiet start")
    ((keap_id, _),) = _linked_contacts(world, 1, 15)
    runs, lines = len(hooked.outcomes), len(hooked.lines)
    with exclusive(world.settings.db_path, "sync"):
        emit = {"event_key": "contact.edit", "ids": [keap_id]}
        admin(world.keap, world.boxes.keap_root, "/_sandbox/hooks/emit", emit)
        wait_until(
            lambda: any("not started: another crmsync" in line for line in hooked.lines[lines:]),
            "the triggered run finding the state held",
        )
        assert len(hooked.outcomes) == runs
        assert hooked.service.spool.pending() is not None  # the events wait in the spool
    wait_until(lambda: len(hooked.outcomes) > runs and hooked.delivered_and_settled(), "the run after it")
    assert hooked.outcomes[runs].status == "ok"


def test_a_flood_of_ten_thousand_events_causes_at_most_three_syncs(hooked: Hooked) -> None:
    world = hooked.world
    wait_until(hooked.delivered_and_settled, "a quiet start")
    before = len(hooked.outcomes)
    ids = [str(i) for i in range(1001, 1026)] * 400  # Keap batches them: 1,000 object keys a POST
    world.served()
    flood = admin(
        world.keap, world.boxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "contact.edit", "ids": ids}
    )
    assert flood == {"queued": 10_000}
    wait_until(lambda: len(hooked.outcomes) > before and hooked.delivered_and_settled(), "the flood synced")
    runs = hooked.outcomes[before:]
    assert 1 <= len(runs) <= 3, hooked.lines
    assert all(run.status == "ok" and not run.push.wrote for run in runs)
    keap, _ = world.served()
    # each run's extract asks Keap for one page a resource: the 10,000 hints cost no read each
    assert keap["reads"] <= 5 * len(runs) + 1
    assert hooked.service.app.counts["deliveries"] >= 10


def test_the_hook_files_are_the_owners_only(hooked: Hooked) -> None:
    state: Path = hooked.world.settings.state_dir
    for name in ("hooks.secret", "hooks.json", "hooks.sqlite3"):
        assert (state / name).stat().st_mode & 0o077 == 0, name
    wait_until(hooked.delivered_and_settled, "the trigger idle")
    tables = hooked.world.sql("select table_schema, table_name from information_schema.tables")
    assert tables and not any("hook" in name for _, name in tables)  # the DuckDB file holds no hook state
