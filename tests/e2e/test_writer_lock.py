"""A sync on PostgreSQL holds the writers' advisory lock in a session of its own for its
whole run. If that session ends mid-run (a server restart, a terminated backend, a dropped
network), the lock is gone and another crmsync may take it: the run stops before its next
request, in one line, and the next run finishes the work."""

from __future__ import annotations

import httpx
import pytest

import crmsync.lock
import reverse_etl.keap_target
import reverse_etl.keap_watch
from crmsync.lock import WAREHOUSE_LOCK, _advisory, exclusive
from support.warehouse import PostgresConnection, url
from tests.e2e.conftest import World

ENGINES = ("postgres",)  # the DuckDB file's lock is the kernel's: held until the process ends


def _end_the_lock_session() -> None:
    """What a server restart does to the session that holds the lock, from outside it."""
    with PostgresConnection(url() or "") as admin:
        ended = admin.execute(
            """select pg_terminate_backend(pid) from pg_locks
               where locktype = 'advisory' and granted
                 and database = (select oid from pg_database where datname = current_database())"""
        ).fetchall()
    assert ended == [(True,)]


class EndTheLockAtTheFirstPatch(httpx.HTTPTransport):
    """Keap; as the first PATCH goes out, the lock's session ends."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.patches += 1
            if self.patches == 1:
                _end_the_lock_session()
        return super().handle_request(request)


@pytest.mark.synced
def test_a_sync_that_lost_its_warehouse_lock_stops_before_its_next_request_and_the_next_run_finishes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacts = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit 6"
    )
    for _, customcrm_id in contacts:  # six Keap PATCHes due
        assert (
            world.crm.patch(f"/contacts/{customcrm_id}", json={"Title": "from Customcrm"}).status_code == 200
        )
    monkeypatch.setattr(crmsync.lock, "CHECK_EVERY_S", 0.0)  # ask at every request, not once a second
    monkeypatch.setattr(reverse_etl.keap_target, "CHUNK_FIRST", 2)
    monkeypatch.setattr(reverse_etl.keap_watch, "CHUNK_MAX", 2)
    # one write on the wire at a time: a request already past the check when the lock went
    # is not called back (with more lanes, up to one per lane), and here there is none
    monkeypatch.setattr(reverse_etl.keap_target, "KEAP_CONCURRENCY", 1)
    world.served()

    ending = EndTheLockAtTheFirstPatch()
    with exclusive(world.settings.db_path, "sync"):
        stopped = world.sync(keap_transport=ending)
        # the danger is real: with the session gone, another crmsync gets the lock
        with PostgresConnection(url() or "") as other:
            assert _advisory(other, "pg_try_advisory_lock", WAREHOUSE_LOCK, 0)
    assert stopped.status == "failed"
    assert stopped.error is not None and "the PostgreSQL warehouse's writer lock was lost" in stopped.error
    assert "\n" not in stopped.error and "run it again" in stopped.error
    keap, _ = world.served()
    assert ending.patches == 1 and keap["writes"] == 1  # nothing was sent after the lock was lost
    assert crmsync.lock.lost_writer_lock() is None  # the lock's block ended: nothing held, nothing lost

    with exclusive(world.settings.db_path, "sync"):
        again = world.sync()
    assert again.status == "ok", again.error or again.problems
    titles = {world.keap.get(f"/contacts/{keap_id}").json()["job_title"] for keap_id, _ in contacts}
    assert titles == {"from Customcrm"}
    world.served()
    assert not world.sync().push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
