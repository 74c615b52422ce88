"""The Keap target: PATCH with update_mask, a few at a time, in chunks of about four
seconds, each after a re-read of what changed in Keap since the last one: records edited
since the extract are held back, so an edit made during the run is never overwritten
(reverse_etl.keap_watch). A create (the reverse flow, off by default) is recorded as an
intent with its marker first, so a crash never creates twice; `recover` finds the creates
whose answer was lost again by their marker (reverse_etl.keap_search) and links them.

Keap's daily quota: the writes stop where only `reserve` requests of it are left (for the
run's read-back and the next extracts); the rest are deferred, named in the run's errors,
and written by the runs after the quota resets. Nothing written is written again: the
next build computes only what is still different."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

import registry
from connectors.errors import ApiError, RecordRejected, RetryableError
from connectors.keap import KeapClient
from reverse_etl.keap_search import TooMany, Unsearchable, find, keap_time, marker_for
from reverse_etl.keap_watch import CHUNK_FIRST, KeapWatch, next_chunk_size
from reverse_etl.state import Outcome
from reverse_etl.targets import STOP_THE_RUN, Decisions, PushContext, as_json, query

KEAP_CONCURRENCY = 4


def _as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class KeapTarget:
    system = "keap"

    def __init__(self, ctx: PushContext, keap: KeapClient, reserve: int = 0) -> None:
        self.ctx = ctx
        self.keap = keap
        self.reserve = reserve  # requests of Keap's daily quota the writes leave alone
        self.held: dict[str, dict[str, str]] = {}  # mapping -> Keap creates held for review, and why

    def recover(self, mapping: str) -> None:
        """Creates sent in a run that ended before recording the answer: find each in Keap by
        its marker, among the records created since the intent and not linked yet, and link
        it (the link and the intent in one transaction). Not there: the create is sent again.
        Several: a guess either way, so the intent is held for review, with the ids."""
        self.held[mapping] = self.ctx.recorder.held_intents(mapping)
        intents = self.ctx.recorder.open_intents(mapping)
        if not intents:
            return
        resource = registry.mapping(mapping).keap.name
        linked = self.ctx.linked(mapping, "keap_id")
        reading = self.keap.clock.reading()
        for intent in intents:
            customcrm_id = str(intent["customcrm_id"])
            marker = as_json(intent["marker"])
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
                self.ctx.recorder.record([link], [])
                linked.add(found[0])
                self.ctx.result.mappings[mapping].linked += 1
            elif not found:
                self.ctx.recorder.settle_intent(
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
        self.ctx.recorder.settle_intent(mapping, customcrm_id, "held", reason)
        self.held.setdefault(mapping, {})[customcrm_id] = reason

    def push(self, mapping: str, decisions: Decisions) -> None:
        resource = registry.mapping(mapping).keap.name
        # a create found again in Keap this run (an intent resolved in recover) is linked already
        ready = self.ctx.ready_rows(
            mapping,
            self.system,
            f"sync_keap__{resource}",
            "op, keap_id, customcrm_id, update_mask, payload, fields, status, keap_updated_at",
            "customcrm_id",
        )
        if not ready:
            return
        marks = query(
            self.ctx.db_path,
            "select read_up_to from main.sync_keap_read_marks where resource = ?",
            [resource],
        )
        latest = marks[0]["read_up_to"] if marks else None
        watch = KeapWatch(self.keap, resource, latest, self.ctx.result.keap_read_to_write)
        pending, size, done = list(ready), CHUNK_FIRST, 0
        with ThreadPoolExecutor(max_workers=KEAP_CONCURRENCY) as pool:
            while pending:
                room = self.room()
                if room is not None and room < 2:  # not even one re-read and one write
                    self._defer(mapping, pending)
                    break
                take = size if room is None else min(size, room - 1)
                chunk, pending = pending[:take], pending[take:]
                # re-read what Keap changed since the last re-read (the first: since the extract),
                # just before the writes it clears; creates have nothing to overwrite
                checked = any(row["keap_id"] for row in chunk)
                if checked:
                    watch.reread(expected=size)
                held = [row for row in chunk if watch.edited(row)]
                to_write = [row for row in chunk if not watch.edited(row)]
                self._hold_back(mapping, held)
                started = time.monotonic()
                write = partial(self._write, mapping, resource, watch=watch, checked=checked)
                results = list(pool.map(write, to_write))
                deferred = [row for row, outcome in zip(to_write, results, strict=True) if outcome is None]
                written = [(row, o) for row, o in zip(to_write, results, strict=True) if o is not None]
                self._record(mapping, written, decisions)
                pending = deferred + pending  # their turn came too long after the re-read: the next
                watch.lenient = bool(deferred) and not written
                size = next_chunk_size(size, len(written), time.monotonic() - started)
                done += len(held) + len(written)
                if self.ctx.progress:
                    self.ctx.progress(mapping, "keap", done, len(ready))

    def room(self) -> int | None:
        """Requests the writes may still spend of Keap's daily quota (None: Keap did not say)."""
        left, _ = self.keap.quota()
        return None if left is None else left - self.reserve

    def _defer(self, mapping: str, rows: list[dict[str, Any]]) -> None:
        """Leave these writes to the runs after Keap's quota resets: not sent, not recorded
        (the next build has them again), named in the run's errors."""
        self.ctx.result.mappings[mapping].deferred += len(rows)
        left, resets = self.keap.quota()
        self.ctx.result.errors[mapping] = (
            f"{len(rows)} Keap writes wait for Keap's daily request quota ({left} left today, "
            f"{self.reserve} kept for reading, CRMSYNC_KEAP_QUOTA_RESERVE); it resets at {resets}: "
            "the next run after that writes them"
        )

    def _hold_back(self, mapping: str, held: list[dict[str, Any]]) -> None:
        if not held:
            return
        reason = "edited in Keap since the extract: merged on the next run"
        self.ctx.result.mappings[mapping].held_back += len(held)
        self.ctx.recorder.record(
            [self.ctx.outcome(mapping, "keap", row, "held_back", None, reason) for row in held], []
        )

    def _record(
        self,
        mapping: str,
        written: list[tuple[dict[str, Any], Outcome]],
        decisions: Decisions,
    ) -> None:
        outcomes, bases = [], []
        for row, outcome in written:
            self.ctx.tally(outcome)  # here, in the thread that records: the writers only answer
            outcomes.append(outcome)
            if outcome.status == "ok" and row["op"] != "delete":
                pair = decisions.get(row["keap_id"] or "new:" + row["customcrm_id"], [])
                targets = {"keap", "none"} if row["op"] == "create" else {"keap"}
                bases += self.ctx.bases(mapping, outcome.keap_id or "", pair, targets)
        self.ctx.recorder.record(outcomes, bases)

    def _write(
        self, mapping: str, resource: str, row: dict[str, Any], *, watch: KeapWatch, checked: bool
    ) -> Outcome | None:
        """One write, in a worker thread: its outcome (counted when recorded), or None when its
        turn came too long after the re-read that cleared it. Touches no shared counter."""
        payload = as_json(row["payload"])
        if row["keap_id"] and checked and not watch.fresh():
            return None
        try:
            if row["op"] == "update":
                self.keap.update(resource, row["keap_id"], payload, list(row["update_mask"]))
                watch.answered()
                return self.ctx.outcome(mapping, "keap", row, "ok", 200, None)
            if row["op"] == "delete":
                self.keap.delete(resource, row["keap_id"])
                watch.answered()
                return self.ctx.outcome(mapping, "keap", row, "ok", 204, None)
            return self._create(mapping, resource, row, payload)
        except STOP_THE_RUN:
            raise
        except RecordRejected as exc:
            outcome = self.ctx.outcome(mapping, "keap", row, "rejected", exc.status, exc.reason or str(exc))
            outcome.field_errors = [{"field": f.field, "message": f.message} for f in exc.field_errors]
            return outcome
        except (RetryableError, ApiError) as exc:
            return self.ctx.outcome(mapping, "keap", row, "failed", exc.status, str(exc))

    def _create(self, mapping: str, resource: str, row: dict[str, Any], payload: dict[str, Any]) -> Outcome:
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
                self.ctx.recorder.intend_keap_create(
                    mapping, customcrm_id, payload, None, "unsearchable", held
                )
        if held is not None:
            return self.ctx.outcome(mapping, "keap", row, "rejected", None, f"held for review: {held}")
        self.ctx.recorder.intend_keap_create(mapping, customcrm_id, payload, marker)
        try:
            created = self.keap.create(resource, payload)
        except RecordRejected as exc:  # refused: nothing was created, the next run tries again
            self.ctx.recorder.settle_intent(
                mapping, customcrm_id, "abandoned", f"refused: {exc.reason or exc}"
            )
            raise
        keap_id = str(created["id"])
        outcome = self.ctx.outcome(mapping, "keap", row, "ok", 201, None)
        # the link, recorded with the chunk, fulfils the intent in the same transaction
        outcome.keap_id, outcome.link_rule = keap_id, "created_in_keap"
        return outcome
