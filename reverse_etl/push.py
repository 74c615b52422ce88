"""The push: writes what the dbt `sync_*` models say each system needs, exactly once,
and records what it wrote.

Per mapping, parents before children (customers, contacts, orders, products):

0. Keap creates whose answer was lost (a crash, a dropped connection) are found again by
   their marker and linked (reverse_etl.keap_search), before anything is sent;
1. record the links dbt matched (ExternalRefs.keap, a unique natural key): no API call;
2. Customcrm: creates, merge-patch updates and deletes in batches of up to 100 operations
   and 1 MiB, each create with an Idempotency-Key naming the record and its body, each
   update and delete with If-Match (a 412 leaves the row for the next run, which sees the
   newer value, unless the record already holds what the write carries: a batch resent
   after its answer was lost);
3. Keap: PATCH with update_mask, a few at a time, in chunks of about four seconds, each
   after a re-read of what changed in Keap since the last one: records edited since the
   extract are held back, so an edit made during the run is never overwritten
   (reverse_etl.keap_watch). A create (the reverse flow, off by default) is recorded as an
   intent with its marker first, so a crash never creates twice;
4. with each batch's results, in one transaction: the operations, new links (and the
   intents they fulfil), rejections, and the bases of the fields whose write went through
   (or that needed none).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import registry
from connectors.customcrm import CustomcrmClient
from connectors.errors import ApiError, FatalError, QuotaExhausted, RecordRejected, RetryableError
from connectors.keap import KeapClient
from registry import mapping_names
from reverse_etl.keap_search import TooMany, Unsearchable, find, keap_time, marker_for
from reverse_etl.keap_watch import CHUNK_FIRST, KeapWatch, ReadToWrite, next_chunk_size
from reverse_etl.state import Outcome, Recorder
from support.duck import connect

MAPPINGS = mapping_names()  # parents before children (the registry's order)
KEAP_CONCURRENCY = 4
# what stops the whole push at once: credentials, the run's deadline, a spent daily quota (every
# later request would be refused; the run says when to try again)
STOP_THE_RUN = (FatalError, QuotaExhausted)

ProgressCallback = Callable[[str, str, int, int], None]
"""(mapping, target, rows done, rows in all)"""


@dataclass
class MappingSummary:
    linked: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: int = 0
    waiting: int = 0
    held_back: int = 0
    failed: int = 0
    stale: int = 0  # 412: changed since read; the next run sees the newer value


@dataclass
class PushResult:
    mappings: dict[str, MappingSummary] = field(
        default_factory=lambda: {m: MappingSummary() for m in MAPPINGS}
    )
    rejections: list[dict[str, Any]] = field(default_factory=list)
    creates: int = 0  # creates that went through: children waiting on them may now be ready
    # mapping -> why its push stopped part-way or did not start (a refused read or write of
    # one resource); the other mappings went on
    errors: dict[str, str] = field(default_factory=dict)
    # mapping -> the first reason a write of it failed (5xx, 429 past the retries, no answer)
    failures: dict[str, str] = field(default_factory=dict)
    # how long after the re-read that cleared it each Keap write was answered
    keap_read_to_write: ReadToWrite = field(default_factory=ReadToWrite)

    @property
    def wrote(self) -> bool:
        return any(s.created or s.updated or s.deleted or s.linked for s in self.mappings.values())

    @property
    def waiting(self) -> int:
        return sum(s.waiting for s in self.mappings.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.mappings.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "mappings": {m: asdict(s) for m, s in self.mappings.items()},
            "rejections": self.rejections,
            "errors": self.errors,
            "failures": self.failures,
            "keap_read_to_write": self.keap_read_to_write.as_dict(),
        }


def merge_results(first: PushResult, later: PushResult) -> PushResult:
    """Two rounds of one sync as one: counts add up, except rows still waiting, which are
    what the later round left."""
    merged = PushResult(
        rejections=first.rejections + later.rejections,
        creates=first.creates + later.creates,
        errors={**first.errors, **later.errors},
        failures={**later.failures, **first.failures},
        keap_read_to_write=first.keap_read_to_write.merge(later.keap_read_to_write),
    )
    for mapping in MAPPINGS:
        a, b = asdict(first.mappings[mapping]), asdict(later.mappings[mapping])
        summed = {k: a[k] + b[k] for k in a}
        summed["waiting"] = b["waiting"]
        summed["conflicts"] = a["conflicts"]
        merged.mappings[mapping] = MappingSummary(**summed)
    return merged


def _rows(db_path: Path, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    with connect(db_path) as con:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _tuples(db_path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with connect(db_path) as con:
        return con.execute(sql, list(params)).fetchall()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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

    Batches are recorded in order, one at a time, and batch n + 2 is sent only once batch
    n is recorded: a crash can leave at most two answered batches unrecorded (one when
    recording inline). That loses only records: the next run sends
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


class Pusher:
    def __init__(
        self,
        db_path: Path,
        run_id: str,
        keap: KeapClient,
        customcrm: CustomcrmClient,
        progress: ProgressCallback | None = None,
        mappings: Sequence[str] = MAPPINGS,
        blocked: dict[str, str] | None = None,
    ) -> None:
        self.db_path = db_path
        self.mappings = tuple(mappings)  # a subset pushes only those (the peer benchmark)
        self.blocked = dict(blocked or {})  # mapping -> why it must not be pushed this run
        self.recorder = Recorder(db_path, run_id)
        self.keap = keap
        self.customcrm = customcrm
        self.progress = progress
        self.result = PushResult()
        self.held: dict[str, dict[str, str]] = {}  # mapping -> Keap creates held for review, and why

    # --- the run ---------------------------------------------------------------------
    def run(self) -> PushResult:
        # one database instance for the whole push: the short connections below reuse it
        # instead of opening the file again for every batch (~25 ms each)
        with connect(self.db_path):
            return self._run()

    def _run(self) -> PushResult:
        for mapping in self.mappings:
            if mapping in self.blocked:
                self.result.errors[mapping] = f"not pushed this run: {self.blocked[mapping]}"
                continue
            try:
                self._push_mapping(mapping)
            except STOP_THE_RUN:
                raise
            except ApiError as exc:  # one resource refused: this mapping stops, the others go on
                self.result.errors[mapping] = f"stopped: {exc}; the next run writes the rest"
        return self.result

    def _push_mapping(self, mapping: str) -> None:
        """One mapping's writes, in order; what went through is recorded batch by batch, so
        an error part-way leaves nothing advanced past what was really written."""
        self._resolve_keap_intents(mapping)
        conflicts = _rows(
            self.db_path,
            """select mapping, keap_id, customcrm_id, field, base_value, keap_value, customcrm_value,
                      winner, reason
               from main.sync_conflicts where mapping = ?""",
            [mapping],
        )
        self.recorder.record_conflicts(conflicts)
        self.result.mappings[mapping].conflicts += len(conflicts)
        decisions = self._decisions(mapping)
        self._link_matches(mapping)
        self._push_customcrm(mapping, decisions)
        self._push_keap(mapping, decisions)
        self._confirm_equal(mapping, decisions)

    def _decisions(self, mapping: str) -> dict[str, list[dict[str, Any]]]:
        """Per pair, the fields whose base must move: new, or different from the merged value."""
        rows = _rows(
            self.db_path,
            """select keap_id, customcrm_id, field, merged_value, write_to
               from main.sync_field_decisions
               where mapping = ? and (not has_base or base_value is distinct from merged_value)""",
            [mapping],
        )
        by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_pair[row["keap_id"] or "new:" + row["customcrm_id"]].append(row)
        return by_pair

    @staticmethod
    def _bases(
        mapping: str, keap_id: str, decisions: list[dict[str, Any]], targets: set[str]
    ) -> list[tuple[str, str, str, str | None]]:
        """The bases that advance with a write that went through: the fields it carried
        (`targets`: where their values were written; 'none' for fields already equal)."""
        return [
            (mapping, keap_id, d["field"], d["merged_value"]) for d in decisions if d["write_to"] in targets
        ]

    # --- 1. links dbt matched ----------------------------------------------------------------
    def _link_matches(self, mapping: str) -> None:
        matched = _rows(
            self.db_path,
            f"""select keap_id, customcrm_id, link_rule from intermediate.int_{mapping}__matched
                where link_rule in ('external_ref', 'natural_key')""",
        )
        outcomes = [
            Outcome(
                mapping,
                "customcrm",
                "link",
                r["keap_id"],
                r["customcrm_id"],
                [],
                None,
                "ok",
                link_rule=r["link_rule"],
            )
            for r in matched
        ]
        self.recorder.record(outcomes, [])
        self.result.mappings[mapping].linked += len(outcomes)

    def _confirm_equal(self, mapping: str, decisions: dict[str, list[dict[str, Any]]]) -> None:
        """Fields both sides already agree on become the base of linked pairs (no API call):
        a new link, a field changed on both sides to the same value."""
        bases = [
            (mapping, d["keap_id"], d["field"], d["merged_value"])
            for pair in decisions.values()
            for d in pair
            if d["write_to"] == "none" and d["keap_id"] and d["customcrm_id"]
        ]
        self.recorder.record([], bases)

    # --- 2. Customcrm -------------------------------------------------------------------------------
    def _push_customcrm(self, mapping: str, decisions: dict[str, list[dict[str, Any]]]) -> None:
        summary = self.result.mappings[mapping]
        rows = _rows(
            self.db_path,
            f"""select op, keap_id, customcrm_id, if_match, idempotency_key, payload, fields, status
                from main.sync_customcrm__{mapping} order by op, keap_id""",
        )
        # a Keap record linked this run (a create found again above) needs no Customcrm create
        linked = {
            k
            for (k,) in _tuples(
                self.db_path, "select keap_id from sync_state.links where mapping = ?", [mapping]
            )
        }
        rows = [r for r in rows if not (r["op"] == "create" and r["keap_id"] in linked)]
        ready = [r for r in rows if r["status"] == "ready"]
        summary.waiting += len(rows) - len(ready)
        with RecordBehind(self.recorder) as record:
            self._send_customcrm_batches(mapping, ready, decisions, record)

    def _send_customcrm_batches(
        self,
        mapping: str,
        ready: list[dict[str, Any]],
        decisions: dict[str, list[dict[str, Any]]],
        record: RecordBehind,
    ) -> None:
        summary = self.result.mappings[mapping]
        operations = [self._customcrm_operation(row) for row in ready]
        sent = 0
        for indexes in self.customcrm.plan_batches(operations):  # <= 100 operations and <= 1 MiB each
            batch = [ready[i] for i in indexes]
            try:
                results = self.customcrm.batch(mapping, [operations[i] for i in indexes])
            except STOP_THE_RUN:
                raise
            except ApiError as exc:  # the whole call failed: every row is tried again next run
                outcomes = [
                    self._outcome(mapping, "customcrm", row, "failed", exc.status, str(exc)) for row in batch
                ]
                summary.failed += len(batch)
                record(outcomes, [])
                continue
            outcomes, bases = [], []
            for index, row, result in zip(indexes, batch, results, strict=True):
                outcome, pair_bases = self._customcrm_result(
                    mapping, row, operations[index], result, decisions
                )
                outcomes.append(outcome)
                bases += pair_bases
            record(outcomes, bases)
            sent += len(batch)
            if self.progress:
                self.progress(mapping, "customcrm", sent, len(ready))

    @staticmethod
    def _customcrm_operation(row: dict[str, Any]) -> dict[str, Any]:
        operation: dict[str, Any] = {"op": row["op"]}
        if row["op"] != "delete":
            operation["data"] = _json(row["payload"])
        if row["op"] == "create":
            # the key names the record and the body: the same create is replayed, never made twice,
            # and a create whose body changed since an earlier attempt is a new request, not a 422
            operation["idempotency_key"] = f"{row['idempotency_key']}:{_digest(operation['data'])}"
        else:
            operation["id"] = row["customcrm_id"]
            operation["if_match"] = row["if_match"]
        return operation

    def _customcrm_result(
        self,
        mapping: str,
        row: dict[str, Any],
        operation: dict[str, Any],
        result: dict[str, Any],
        decisions: dict[str, list[dict[str, Any]]],
    ) -> tuple[Outcome, list[Any]]:
        summary = self.result.mappings[mapping]
        status = int(result.get("status", 0))
        error = result.get("error") or {}
        reason = error.get("detail") or error.get("title") or f"status {status}"
        already = self._already_applied(mapping, row, operation, status)
        if already is not None:  # our own earlier attempt (a batch resent after a lost answer)
            status, reason = 200 if row["op"] == "update" else 204, already
        if 200 <= status < 300:
            customcrm_id = row["customcrm_id"] or (result.get("data") or {}).get("Id")
            outcome = self._outcome(mapping, "customcrm", row, "ok", status, already, customcrm_id)
            if row["op"] == "create":
                outcome.link_rule = "created_in_customcrm"
                summary.created += 1
                self.result.creates += 1
            elif row["op"] == "delete":
                summary.deleted += 1
                return outcome, []
            else:
                summary.updated += 1
            targets = {"customcrm", "none"} if row["op"] == "create" else {"customcrm"}
            return outcome, self._bases(mapping, row["keap_id"], decisions.get(row["keap_id"], []), targets)
        if status == 412:
            summary.stale += 1
            return self._outcome(mapping, "customcrm", row, "stale", status, reason), []
        if status >= 500 or status == 429:
            summary.failed += 1
            return self._outcome(mapping, "customcrm", row, "failed", status, reason), []
        summary.rejected += 1
        outcome = self._outcome(mapping, "customcrm", row, "rejected", status, reason)
        outcome.field_errors = error.get("errors") or []
        self._note_rejection(outcome)
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

    # --- 3. Keap ----------------------------------------------------------------------------------
    def _push_keap(self, mapping: str, decisions: dict[str, list[dict[str, Any]]]) -> None:
        summary = self.result.mappings[mapping]
        resource = registry.mapping(mapping).keap.name
        rows = _rows(
            self.db_path,
            f"""select op, keap_id, customcrm_id, update_mask, payload, fields, status, keap_updated_at
                from main.sync_keap__{resource} order by op, keap_id""",
        )
        # a create found again in Keap this run (an intent resolved above) is linked already
        linked = {r["customcrm_id"] for r in _rows(
            self.db_path, "select customcrm_id from sync_state.links where mapping = ?", [mapping])}  # fmt: skip
        rows = [r for r in rows if not (r["op"] == "create" and r["customcrm_id"] in linked)]
        ready = [r for r in rows if r["status"] == "ready"]
        summary.waiting += len(rows) - len(ready)
        if not ready:
            return
        latest = _rows(self.db_path, f"select max(_cursor) as latest from raw_keap.{resource}")[0]["latest"]
        watch = KeapWatch(self.keap, resource, latest, self.result.keap_read_to_write)
        pending, size, done = list(ready), CHUNK_FIRST, 0
        with ThreadPoolExecutor(max_workers=KEAP_CONCURRENCY) as pool:
            while pending:
                chunk, pending = pending[:size], pending[size:]
                # re-read what Keap changed since the last re-read (the first: since the extract),
                # just before the writes it clears; creates have nothing to overwrite
                checked = any(row["keap_id"] for row in chunk)
                if checked:
                    watch.reread(expected=size)
                held = [row for row in chunk if watch.edited(row)]
                to_write = [row for row in chunk if not watch.edited(row)]
                self._hold_back(mapping, held)
                started = time.monotonic()
                write = partial(self._keap_write, mapping, resource, watch=watch, checked=checked)
                results = list(pool.map(write, to_write))
                deferred = [row for row, outcome in zip(to_write, results, strict=True) if outcome is None]
                written = [(row, o) for row, o in zip(to_write, results, strict=True) if o is not None]
                self._record_keap(mapping, written, decisions)
                pending = deferred + pending  # their turn came too long after the re-read: the next
                watch.lenient = bool(deferred) and not written
                size = next_chunk_size(size, len(written), time.monotonic() - started)
                done += len(held) + len(written)
                if self.progress:
                    self.progress(mapping, "keap", done, len(ready))

    def _hold_back(self, mapping: str, held: list[dict[str, Any]]) -> None:
        if not held:
            return
        reason = "edited in Keap since the extract: merged on the next run"
        self.result.mappings[mapping].held_back += len(held)
        self.recorder.record(
            [self._outcome(mapping, "keap", row, "held_back", None, reason) for row in held], []
        )

    def _record_keap(
        self,
        mapping: str,
        written: list[tuple[dict[str, Any], Outcome]],
        decisions: dict[str, list[dict[str, Any]]],
    ) -> None:
        outcomes, bases = [], []
        for row, outcome in written:
            outcomes.append(outcome)
            if outcome.status == "ok" and row["op"] != "delete":
                pair = decisions.get(row["keap_id"] or "new:" + row["customcrm_id"], [])
                targets = {"keap", "none"} if row["op"] == "create" else {"keap"}
                bases += self._bases(mapping, outcome.keap_id or "", pair, targets)
        self.recorder.record(outcomes, bases)

    def _keap_write(
        self, mapping: str, resource: str, row: dict[str, Any], *, watch: KeapWatch, checked: bool
    ) -> Outcome | None:
        """One write; None when its turn came too long after the re-read that cleared it."""
        summary = self.result.mappings[mapping]
        payload = _json(row["payload"])
        if row["keap_id"] and checked and not watch.fresh():
            return None
        try:
            if row["op"] == "update":
                self.keap.update(resource, row["keap_id"], payload, list(row["update_mask"]))
                watch.answered()
                summary.updated += 1
                return self._outcome(mapping, "keap", row, "ok", 200, None)
            if row["op"] == "delete":
                self.keap.delete(resource, row["keap_id"])
                watch.answered()
                summary.deleted += 1
                return self._outcome(mapping, "keap", row, "ok", 204, None)
            return self._keap_create(mapping, resource, row, payload)
        except STOP_THE_RUN:
            raise
        except RecordRejected as exc:
            summary.rejected += 1
            outcome = self._outcome(mapping, "keap", row, "rejected", exc.status, exc.reason or str(exc))
            outcome.field_errors = [{"field": f.field, "message": f.message} for f in exc.field_errors]
            self._note_rejection(outcome)
            return outcome
        except (RetryableError, ApiError) as exc:
            summary.failed += 1
            return self._outcome(mapping, "keap", row, "failed", exc.status, str(exc))

    def _keap_create(
        self, mapping: str, resource: str, row: dict[str, Any], payload: dict[str, Any]
    ) -> Outcome:
        """The intent, with what finds the record again, is recorded before the request: after
        a lost answer or a crash the record is found again, not created twice. A record that
        nothing could find again, or whose intent is held for review, is not created."""
        customcrm_id = row["customcrm_id"]
        held = self.held.get(mapping, {}).get(customcrm_id)
        if held is None:
            try:
                marker = marker_for(mapping, payload)
            except Unsearchable as exc:
                held = str(exc)
                # not sent; looked at again every run, so a value fixed meanwhile goes through
                self.recorder.intend_keap_create(mapping, customcrm_id, payload, None, "unsearchable", held)
        if held is not None:
            summary = self.result.mappings[mapping]
            summary.rejected += 1
            outcome = self._outcome(mapping, "keap", row, "rejected", None, f"held for review: {held}")
            self._note_rejection(outcome)
            return outcome
        self.recorder.intend_keap_create(mapping, customcrm_id, payload, marker)
        try:
            created = self.keap.create(resource, payload)
        except RecordRejected as exc:  # refused: nothing was created, the next run tries again
            self.recorder.settle_intent(mapping, customcrm_id, "abandoned", f"refused: {exc.reason or exc}")
            raise
        keap_id = str(created["id"])
        self.result.mappings[mapping].created += 1
        self.result.creates += 1
        outcome = self._outcome(mapping, "keap", row, "ok", 201, None)
        # the link, recorded with the chunk, fulfils the intent in the same transaction
        outcome.keap_id, outcome.link_rule = keap_id, "created_in_keap"
        return outcome

    def _resolve_keap_intents(self, mapping: str) -> None:
        """Creates sent in a run that ended before recording the answer: find each in Keap by
        its marker, among the records created since the intent and not linked yet, and link
        it (the link and the intent in one transaction). Not there: the create is sent again.
        Several: a guess either way, so the intent is held for review, with the ids."""
        self.held[mapping] = self.recorder.held_intents(mapping)
        intents = self.recorder.open_intents(mapping)
        if not intents:
            return
        resource = registry.mapping(mapping).keap.name
        linked = {
            k
            for (k,) in _tuples(
                self.db_path, "select keap_id from sync_state.links where mapping = ?", [mapping]
            )
        }
        reading = self.keap.clock.reading()
        for intent in intents:
            customcrm_id = str(intent["customcrm_id"])
            marker = _json(intent["marker"])
            if not marker:  # recorded before markers existed: nothing to search by
                reason = "its create was sent but the answer lost, and it has no marker to find it by"
                self._hold(mapping, customcrm_id, reason)
                continue
            since = keap_time(
                _as_utc(intent["intended_at"]),
                reading.offset_s if reading else None,
                reading.uncertainty_s if reading else None,
            )
            try:
                found = [k for k in find(self.keap, resource, marker, since) if k not in linked]
            except (TooMany, RecordRejected) as exc:  # this intent alone waits; the others go on
                why = exc.reason if isinstance(exc, RecordRejected) and exc.reason else str(exc)
                self._hold(
                    mapping, customcrm_id, f"its create's answer was lost and the search for it failed: {why}"
                )
                continue
            if len(found) == 1:
                link = Outcome(mapping, "keap", "link", found[0], customcrm_id, [], None, "ok",
                               answer=f"found again by {marker['label']}", link_rule="created_in_keap")  # fmt: skip
                self.recorder.record([link], [])
                linked.add(found[0])
                self.result.mappings[mapping].linked += 1
            elif not found:
                self.recorder.settle_intent(
                    mapping, customcrm_id, "abandoned", f"not in Keap ({marker['label']}): created again"
                )
            else:
                reason = (
                    f"{len(found)} Keap {resource} match {marker['label']} and were created since its "
                    f"create was sent (ids {', '.join(found)}): set ExternalRefs.keap of Customcrm "
                    f"{customcrm_id} to the right one"
                )
                self._hold(mapping, customcrm_id, reason)

    def _hold(self, mapping: str, customcrm_id: str, reason: str) -> None:
        self.recorder.settle_intent(mapping, customcrm_id, "held", reason)
        self.held.setdefault(mapping, {})[customcrm_id] = reason

    # --- helpers ------------------------------------------------------------------------------------
    def _outcome(
        self,
        mapping: str,
        target: str,
        row: dict[str, Any],
        status: str,
        http_status: int | None,
        answer: str | None,
        customcrm_id: str | None = None,
    ) -> Outcome:
        if status == "failed":
            self.result.failures.setdefault(mapping, f"{target}: {answer}")
        return Outcome(
            mapping=mapping,
            target=target,
            op=row["op"],
            keap_id=row.get("keap_id"),
            customcrm_id=customcrm_id or row.get("customcrm_id"),
            fields=list(row.get("fields") or []),
            payload=_json(row.get("payload")),
            status=status,
            http_status=http_status,
            answer=answer,
        )

    def _note_rejection(self, outcome: Outcome) -> None:
        self.result.rejections.append(
            {
                "mapping": outcome.mapping,
                "target": outcome.target,
                "op": outcome.op,
                "keap_id": outcome.keap_id,
                "customcrm_id": outcome.customcrm_id,
                "status": outcome.http_status,
                "reason": outcome.answer,
                "fields": outcome.field_errors,
            }
        )
