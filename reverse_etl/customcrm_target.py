"""The Customcrm target: creates, merge-patch updates and deletes in batches of up to
100 operations and 1 MiB, each create with an Idempotency-Key naming the record and its
body, each update and delete with If-Match (a 412 leaves the row for the next run, which
sees the newer value, unless the record already holds what the write carries: a batch
resent after its answer was lost). Two batch calls are on the wire at once, and each
batch's results are recorded while the next ones are."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.customcrm import CustomcrmClient
from connectors.errors import ApiError
from reverse_etl.state import Outcome, Recorder
from reverse_etl.targets import STOP_THE_RUN, Decisions, PushContext, as_json


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _same_value(current: Any, wanted: Any) -> bool:
    """A value read back against the value written: merge-patch objects (ExternalRefs) by
    their keys, decimal strings by their value."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(_same_value(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, str) and isinstance(current, str) and wanted != current:
        try:
            return Decimal(wanted) == Decimal(current)
        except InvalidOperation:
            return False
    return bool(current == wanted)


class RecordBehind:
    """Records one batch's outcomes in a thread while the next batch is on the wire.

    Batches are recorded in order, one at a time, and with IN_FLIGHT calls on the wire
    batch n + 4 is sent only once batch n is recorded: a crash can leave at most four
    answered batches unrecorded. That loses only records: the next run sends
    those creates again with the same idempotency keys (Customcrm replays the first
    answer and creates nothing), and finds the updates already equal on both sides.
    Leaving the block waits for the last record; an error while recording is raised in
    the pushing thread.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record")
        self.pending: Future[None] | None = None

    def __call__(self, outcomes: list[Outcome], bases: list[tuple[str, str, str, str | None]]) -> None:
        self.wait()
        self.pending = self.pool.submit(self.recorder.record, outcomes, bases)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self) -> RecordBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()


# batch calls on the wire at once: two keep a 100-operation batch's round trip and its
# client-side work (about 70 ms together at 100,000 records per kind) within the 50 ms a
# call may take at the sandbox's published 20 a second (bench/RESULTS.md, issue 17)
IN_FLIGHT = 2


class CustomcrmTarget:
    system = "customcrm"

    def __init__(self, ctx: PushContext, customcrm: CustomcrmClient) -> None:
        self.ctx = ctx
        self.customcrm = customcrm

    def recover(self, mapping: str) -> None:
        """Nothing to settle: a create resent after a lost answer carries the same
        Idempotency-Key, and Customcrm answers it with the record it created."""

    def push(self, mapping: str, decisions: Decisions) -> None:
        # a Keap record linked this run (a create found again) needs no Customcrm create
        ready = self.ctx.ready_rows(
            mapping,
            self.system,
            f"sync_customcrm__{mapping}",
            "op, keap_id, customcrm_id, if_match, idempotency_key, payload, fields, status, waiting_reason,"
            " unlinked_parents",
            "keap_id",
        )
        with RecordBehind(self.ctx.recorder) as record:
            self._send_batches(mapping, ready, decisions, record)

    def _send_batches(
        self,
        mapping: str,
        ready: list[dict[str, Any]],
        decisions: Decisions,
        record: RecordBehind,
    ) -> None:
        """IN_FLIGHT batch calls on the wire at once, their answers taken in order: the
        client-side work of one batch (encoding, reading its answer, recording) overlaps the
        other's round trip, so the push keeps up with the server's rate. The rows of one
        mapping's batches are distinct records, so their order does not matter; the
        mapping's last answer is in before the next mapping (its children) starts."""
        operations = [self._operation(row) for row in ready]
        batches = iter(self.customcrm.plan_batches(operations))  # <= 100 operations and <= 1 MiB each
        in_flight: deque[tuple[list[int], Future[list[dict[str, Any]]]]] = deque()
        stopped: BaseException | None = None
        sent = 0
        with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="customcrm-batch") as senders:

            def send_more() -> None:
                while stopped is None and len(in_flight) < IN_FLIGHT:
                    indexes = next(batches, None)
                    if indexes is None:
                        return
                    body = [operations[i] for i in indexes]
                    in_flight.append((indexes, senders.submit(self.customcrm.batch, mapping, body)))

            send_more()
            while in_flight:
                indexes, answer = in_flight.popleft()
                batch = [ready[i] for i in indexes]
                try:
                    results = answer.result()
                except STOP_THE_RUN as exc:  # nothing more is sent; what is on the wire is still recorded
                    stopped = stopped or exc
                    continue
                except ApiError as exc:  # the whole call failed: every row is tried again next run
                    outcomes = [
                        self.ctx.outcome(mapping, "customcrm", row, "failed", exc.status, str(exc))
                        for row in batch
                    ]
                    for outcome in outcomes:
                        self.ctx.tally(outcome)
                    record(outcomes, [])
                    send_more()
                    continue
                send_more()
                outcomes, bases = [], []
                for index, row, result in zip(indexes, batch, results, strict=True):
                    outcome, pair_bases = self._result(mapping, row, operations[index], result, decisions)
                    self.ctx.tally(outcome)
                    outcomes.append(outcome)
                    bases += pair_bases
                record(outcomes, bases)
                sent += len(batch)
                if self.ctx.progress:
                    self.ctx.progress(mapping, "customcrm", sent, len(ready))
        if stopped is not None:
            raise stopped

    @staticmethod
    def _operation(row: dict[str, Any]) -> dict[str, Any]:
        operation: dict[str, Any] = {"op": row["op"]}
        if row["op"] != "delete":
            operation["data"] = as_json(row["payload"])
        if row["op"] == "create":
            # the key names the record and the body: the same create is replayed, never made twice,
            # and a create whose body changed since an earlier attempt is a new request, not a 422
            operation["idempotency_key"] = f"{row['idempotency_key']}:{_digest(operation['data'])}"
        else:
            operation["id"] = row["customcrm_id"]
            operation["if_match"] = row["if_match"]
        return operation

    def _result(
        self,
        mapping: str,
        row: dict[str, Any],
        operation: dict[str, Any],
        result: dict[str, Any],
        decisions: Decisions,
    ) -> tuple[Outcome, list[Any]]:
        """What one answer of a batch means: the outcome (counted by the caller) and the bases
        it advances."""
        status = int(result.get("status", 0))
        error = result.get("error") or {}
        reason = error.get("detail") or error.get("title") or f"status {status}"
        already = self._already_applied(mapping, row, operation, status)
        if already is not None:  # our own earlier attempt (a batch resent after a lost answer)
            status, reason = 200 if row["op"] == "update" else 204, already
        if 200 <= status < 300:
            customcrm_id = row["customcrm_id"] or (result.get("data") or {}).get("Id")
            outcome = self.ctx.outcome(mapping, "customcrm", row, "ok", status, already, customcrm_id)
            if row["op"] == "create":
                outcome.link_rule = "created_in_customcrm"
            elif row["op"] == "delete":
                return outcome, []
            targets = {"customcrm", "none"} if row["op"] == "create" else {"customcrm"}
            return outcome, self.ctx.bases(
                mapping, row["keap_id"], decisions.get(row["keap_id"], []), targets
            )
        if status == 412:
            return self.ctx.outcome(mapping, "customcrm", row, "stale", status, reason), []
        if status >= 500 or status == 429:
            return self.ctx.outcome(mapping, "customcrm", row, "failed", status, reason), []
        outcome = self.ctx.outcome(mapping, "customcrm", row, "rejected", status, reason)
        outcome.field_errors = error.get("errors") or []
        return outcome, []

    def _already_applied(
        self, mapping: str, row: dict[str, Any], operation: dict[str, Any], status: int
    ) -> str | None:
        """Was this write applied already, by this sync's own earlier attempt? A batch resent
        after its answer was lost finds its updates applied (412: the version moved) and its
        deletes done (404). An update counts as done when the record holds every value it
        carries (read once, on 412 only); a delete, when the record is gone. Returns why."""
        if row["op"] == "delete" and status == 404:
            return "already deleted"
        if row["op"] != "update" or status != 412:
            return None
        try:
            current = self.customcrm.get(mapping, row["customcrm_id"])
        except STOP_THE_RUN:
            raise
        except ApiError:
            return None
        data = operation.get("data") or {}
        if all(_same_value(current.get(key), value) for key, value in data.items()):
            return "already applied (412: the record holds every value this write carries)"
        return None
