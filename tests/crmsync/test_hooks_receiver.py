"""The hooks' receiver and spool: the secret path, the handshake, bounded bodies, and a
spool that holds event keys and ids only and can be read while it is written."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crmsync.filemodes import secure_state
from crmsync.hooks.files import SPOOL_FILE, hidden, hook_path, path_secret, public_base
from crmsync.hooks.receiver import MAX_BODY, Receiver, ReceiverApp
from crmsync.hooks.spool import Spool


class Served:
    def __init__(self, state: Path) -> None:
        secret = path_secret(state)
        assert secret is not None
        self.secret = secret
        self.spool = Spool(state / SPOOL_FILE)
        self.lines: list[str] = []
        self.woken = threading.Event()
        self.app = ReceiverApp(secret, self.spool, on_events=self.woken.set, log=self.lines.append)
        self.receiver = Receiver(self.app).start()
        self.http = httpx.Client(base_url=self.receiver.url, timeout=10)

    @property
    def path(self) -> str:
        return hook_path(self.secret)

    def rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.spool.path) as con:
            return con.execute("select event_key, object_id from events order by seq").fetchall()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    found = Served(tmp_path / "crmsync.state")
    try:
        yield found
    finally:
        found.http.close()
        found.receiver.stop()
        found.spool.close()


def delivery(event_key: str, *ids: object) -> dict[str, object]:
    return {
        "event_key": event_key,
        "object_type": event_key.split(".")[0],
        "object_keys": [{"id": i, "apiUrl": f"https://keap.example/v1/x/{i}", "timestamp": "2026-11-30T10:00:00Z"}
                        for i in ids],
    }  # fmt: skip


def test_only_the_secret_path_is_answered_and_the_handshake_is_echoed(served: Served) -> None:
    for path in ("/", "/hooks", "/hooks/", "/hooks/not-the-secret", served.path + "x", served.path + "/more"):
        assert served.http.post(path, json=delivery("contact.edit", 1)).status_code == 404, path
        assert served.http.post(path, headers={"X-Hook-Secret": "s"}).status_code == 404, path
    assert served.http.get(served.path).status_code == 405
    answer = served.http.post(served.path, headers={"X-Hook-Secret": "abc123"})
    assert answer.status_code == 200 and answer.headers["x-hook-secret"] == "abc123"
    assert served.rows() == [] and served.app.counts["refused"] == 12


def test_a_delivery_is_spooled_as_event_keys_and_ids_and_nothing_else(served: Served) -> None:
    body = delivery("contact.edit", 1001, "1002", -3, "12; drop", True, None)
    body["object_keys"].append({"id": 1003, "given_name": "Ann Recordname"})  # type: ignore[attr-defined]
    answer = served.http.post(served.path, json=body)
    # the receiver wakes the trigger after it has answered: wait for it, a moment at most
    assert answer.status_code == 200 and served.woken.wait(5)
    assert served.rows() == [("contact.edit", "1001"), ("contact.edit", "1002"), ("contact.edit", "1003")]
    assert served.http.post(served.path, json=delivery("invoice.add", 7)).status_code == 200  # not ours
    assert served.http.post(served.path, content=b"{not json").status_code == 400
    assert served.http.post(served.path, json={"event_key": "contact.add"}).status_code == 400
    assert served.http.post(served.path, json=[1, 2]).status_code == 400
    assert len(served.rows()) == 3
    served.spool.close()
    stored = b"".join(p.read_bytes() for p in served.spool.path.parent.glob(SPOOL_FILE + "*"))
    assert b"contact.edit" in stored
    assert b"Ann Recordname" not in stored and b"keap.example" not in stored and b"timestamp" not in stored
    assert all(served.secret not in line for line in served.lines) and served.lines


def test_a_body_over_a_mebibyte_is_refused_413(served: Served) -> None:
    big = b'{"event_key": "contact.edit", "object_keys": [' + b" " * MAX_BODY + b"]}"
    assert served.http.post(served.path, content=big).status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused as it passes the limit
        yield b'{"event_key": "contact.edit", "object_keys": ['
        for _ in range(20):
            yield b" " * (MAX_BODY // 16)
        yield b"]}"

    assert served.http.post(served.path, content=chunked()).status_code == 413
    ids = list(range(1, 1001))  # Keap's largest delivery fits
    assert served.http.post(served.path, json=delivery("product.edit", *ids)).status_code == 200
    assert len(served.rows()) == 1000


def test_the_secret_is_made_once_private_and_hidden_from_messages(tmp_path: Path) -> None:
    state = tmp_path / "crmsync.state"
    assert path_secret(state, create=False) is None
    secret = path_secret(state)
    assert secret and len(secret) >= 40 and path_secret(state) == secret
    assert stat.S_IMODE((state / "hooks.secret").stat().st_mode) == 0o600
    assert hidden(f"POST https://h.example{hook_path(secret)} failed", secret) == (
        "POST https://h.example/hooks/*** failed"
    )
    assert (
        public_base(f"https://h.example/base/{hook_path(secret)}", secret, False) == "https://h.example/base/"
    )
    assert public_base("http://127.0.0.1:8780/", secret, False) == "http://127.0.0.1:8780"
    with pytest.raises(ValueError, match="https://") as refused:
        public_base(f"http://h.example{hook_path(secret)}", secret, False)
    assert secret not in str(refused.value)
    assert public_base("http://h.example", secret, True) == "http://h.example"


def test_the_spool_can_be_read_and_consumed_while_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "state" / SPOOL_FILE
    writer, reader = Spool(path), Spool(path)  # two connections, as the receiver and a sync have
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    consumed = 0
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(20):
                writer.append("contact.edit", [str(1000 + n * 500 + i) for i in range(500)], float(n))
        except BaseException as exc:  # pragma: no cover - the test fails on it below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive() or reader.pending():
        batch = reader.take(limit=500)
        consumed += batch.events
        reader.consume(batch.upto)
    thread.join()
    assert errors == [] and consumed == 10_000 and reader.pending() is None
    writer.close()
    reader.close()


def test_a_run_takes_the_deletions_it_may_confirm_and_leaves_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / SPOOL_FILE)
    spool.append("contact.edit", ["1"], 1.0)
    spool.append("contact.delete", ["2", "3", "2"], 2.0)
    spool.append("product.delete", ["9"], 3.0)
    spool.append("contact.delete", ["4"], 4.0)
    batch = spool.take(limit=2)  # two contacts' deletions a run: 4 waits, and what came after it
    assert batch.deletions == {"contacts": ["2", "3"], "products": ["9"]}
    assert (
        batch.events == 5
        and batch.summary() == "5 events (contact.delete 3, contact.edit 1, product.delete 1)"
    )
    spool.consume(batch.upto)
    rest = spool.take(limit=2)
    assert rest.deletions == {"contacts": ["4"]} and rest.events == 1
    pending = spool.pending()
    assert pending is not None and pending.events == 1 and pending.first_at == 4.0
    spool.close()


def test_hook_files_left_loose_are_tightened_like_the_rest_of_the_state(tmp_path: Path) -> None:
    db = tmp_path / "crmsync.duckdb"
    state = tmp_path / "crmsync.state"
    path_secret(state)
    Spool(state / SPOOL_FILE).close()
    for name in ("hooks.secret", SPOOL_FILE):
        (state / name).chmod(0o644)
    warned: list[str] = []
    assert secure_state(db, warn=warned.append) == [state / "hooks.secret", state / SPOOL_FILE]
    assert all(stat.S_IMODE((state / n).stat().st_mode) == 0o600 for n in ("hooks.secret", SPOOL_FILE))
    assert len(warned) == 2
