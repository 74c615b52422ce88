"""The Customcrm target keeps two batch calls on the wire, takes their answers in order, and
when one call stops the run, still records what the call beside it wrote."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.errors import AuthError
from reverse_etl.customcrm_target import IN_FLIGHT, CustomcrmTarget, RecordBehind
from reverse_etl.results import PushResult
from reverse_etl.targets import PushContext


class FakeCustomcrm:
    """Each operation a batch of its own; a batch call takes 30 ms; `refuse` answers 401."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.lock = threading.Lock()
        self.on_the_wire = 0
        self.most_on_the_wire = 0
        self.calls: list[str] = []

    def plan_batches(self, operations: list[dict[str, Any]]) -> list[list[int]]:
        return [[i] for i in range(len(operations))]

    def batch(self, resource: str, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        key = operations[0]["idempotency_key"].split(":")[3]
        with self.lock:
            self.on_the_wire += 1
            self.most_on_the_wire = max(self.most_on_the_wire, self.on_the_wire)
            self.calls.append(key)
        time.sleep(0.03)
        with self.lock:
            self.on_the_wire -= 1
        if self.refuse is not None and key == str(self.refuse):
            raise AuthError("Customcrm refused the token (401)", system="customcrm", status=401)
        return [{"status": 201, "data": {"Id": f"cus_{key}"}}]


class Recorded:
    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def record(self, outcomes: list[Any], bases: list[Any]) -> None:
        self.outcomes += outcomes


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {"op": "create", "keap_id": str(i), "customcrm_id": None, "if_match": None,
         "idempotency_key": f"crmsync:customers:keap:{i}", "payload": {"Name": f"n{i}"},
         "fields": ["Name"], "status": "ready"}
        for i in range(n)
    ]  # fmt: skip


def push(client: FakeCustomcrm, recorded: Recorded, n: int) -> None:
    ctx = PushContext(Path("unused.duckdb"), recorded, PushResult())  # type: ignore[arg-type]
    target = CustomcrmTarget(ctx, client)  # type: ignore[arg-type]
    with RecordBehind(recorded) as record:  # type: ignore[arg-type]
        target._send_batches("customers", rows(n), {}, record)


def test_two_batch_calls_are_on_the_wire_at_once_and_every_answer_is_recorded_in_order() -> None:
    client, recorded = FakeCustomcrm(), Recorded()
    push(client, recorded, 10)
    assert IN_FLIGHT == 2 and client.most_on_the_wire == IN_FLIGHT
    assert [o.keap_id for o in recorded.outcomes] == [str(i) for i in range(10)]
    assert [o.customcrm_id for o in recorded.outcomes] == [f"cus_{i}" for i in range(10)]


def test_a_call_that_stops_the_run_sends_nothing_more_but_the_call_beside_it_is_recorded() -> None:
    client, recorded = FakeCustomcrm(refuse=3), Recorded()
    with pytest.raises(AuthError):
        push(client, recorded, 10)
    # batch 4 went out beside batch 3 and was answered: its create is recorded (its link made)
    assert [o.keap_id for o in recorded.outcomes] == ["0", "1", "2", "4"]
    assert sorted(client.calls) == ["0", "1", "2", "3", "4"]  # nothing after the refusal was sent
