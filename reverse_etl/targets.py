"""The push's targets: one per system, behind one protocol.

A target owns its system's requests, its recording and its recovery: `recover` runs
before anything of a mapping is written (the Keap target finds lost creates again),
`push` sends what the mapping's write mart holds for that system and records each
result. Both share a `PushContext`: the state file, the recorder, the run's result
(counted only by the thread that records) and the progress callback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from connectors.errors import FatalError, QuotaExhausted
from reverse_etl.results import ProgressCallback, PushResult
from reverse_etl.state import Outcome, Recorder, payload_digest, set_aside
from support.warehouse import connect

# what stops the whole push at once: credentials, the run's deadline, a spent daily quota (every
# later request would be refused; the run says when to try again)
STOP_THE_RUN = (FatalError, QuotaExhausted)


class Decision(NamedTuple):
    """One field of a pair whose base moves with a write (or without one: `write_to` none).
    A tuple, not a dict: a first sync at 100,000 records per kind holds about a million."""

    keap_id: str | None
    customcrm_id: str | None
    field: str
    merged_value: str | None
    write_to: str


Decisions = dict[str, list[Decision]]
"""Per pair (its Keap id, or new:<Customcrm id>), the fields whose base moves with a write."""


class Target(Protocol):
    system: str

    def recover(self, mapping: str) -> None:
        """Settle what an earlier run left unsettled, before anything is written."""

    def push(self, mapping: str, decisions: Decisions) -> None:
        """Send the mapping's writes for this system; record and count each result."""


def query(db_path: Path, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    with connect(db_path) as con:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def query_tuples(db_path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with connect(db_path) as con:
        return con.execute(sql, list(params)).fetchall()


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class PushContext:
    db_path: Path
    recorder: Recorder
    result: PushResult
    progress: ProgressCallback | None = None

    def linked(self, mapping: str, side: str) -> set[str]:
        """The ids of one side (keap_id or customcrm_id) that a link of the mapping holds."""
        assert side in ("keap_id", "customcrm_id")
        return {
            k
            for (k,) in query_tuples(
                self.db_path, f"select {side} from sync_state.links where mapping = ?", [mapping]
            )
        }

    def ready_rows(
        self, mapping: str, system: str, mart: str, columns: str, linked_side: str
    ) -> list[dict[str, Any]]:
        """The rows of a write mart that are ready to send; the others are counted as waiting.
        A create of a record a link already holds (found again this run) is not sent, nor a
        row set aside (`set_aside`)."""
        rows = query(self.db_path, f"select {columns} from main.{mart} order by op, keap_id")
        linked = self.linked(mapping, linked_side)
        rows = [r for r in rows if not (r["op"] == "create" and r[linked_side] in linked)]
        self.resolve_parents(rows)
        rows = self.set_aside(mapping, system, rows)
        ready = [r for r in rows if r["status"] == "ready"]
        self.result.mappings[mapping].waiting += len(rows) - len(ready)
        return ready

    def resolve_parents(self, rows: list[dict[str, Any]]) -> None:
        """Waiting rows whose only wait is for parents this push has linked since dbt built
        the mart (parents are pushed before children) become ready: each reference is filled
        in from the parent's link, as the next build would write it. A row with a parent
        still unlinked keeps waiting, unchanged."""
        waiting = [r for r in rows if r["status"] == "waiting" and r.get("unlinked_parents")]
        if not waiting:
            return
        references = [(r, as_json(r["unlinked_parents"])) for r in waiting]
        wanted: dict[str, set[str]] = {}
        for _, refs in references:
            for ref in refs.values():
                wanted.setdefault(ref["mapping"], set()).add(ref["keap_id"])
        linked: dict[tuple[str, str], str] = {}
        for parent, keap_ids in wanted.items():
            found = query_tuples(
                self.db_path,
                """select links.keap_id, links.customcrm_id
                   from sync_state.links as links
                   inner join (select unnest(?::varchar[]) as keap_id) as wanted using (keap_id)
                   where links.mapping = ?""",
                [sorted(keap_ids), parent],
            )
            linked.update({(parent, keap_id): customcrm_id for keap_id, customcrm_id in found})
        for row, refs in references:
            filled = {field: linked.get((ref["mapping"], ref["keap_id"])) for field, ref in refs.items()}
            if None in filled.values():
                continue
            row["payload"] = {**as_json(row["payload"]), **filled}
            row["status"], row["waiting_reason"], row["unlinked_parents"] = "ready", None, None

    def set_aside(self, mapping: str, target: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows to send: a row refused before with this very payload waits until it is due
        again, and one a person set aside is not sent while it stays the same (`crmsync
        rejections`). A changed payload is a new write and goes."""
        waiting = set_aside(self.db_path, mapping, target)
        if not waiting:
            return rows
        kept = []
        for row in rows:
            mark = waiting.get((row["keap_id"] or row["customcrm_id"], row["op"]))
            if mark is not None and mark.digest == payload_digest(as_json(row["payload"])):
                self.result.set_aside.append({
                    "mapping": mapping, "target": target, "op": row["op"], "keap_id": row["keap_id"],
                    "customcrm_id": row["customcrm_id"], "why": mark.why})  # fmt: skip
                continue
            kept.append(row)
        return kept

    @staticmethod
    def bases(
        mapping: str, keap_id: str, decisions: list[Decision], targets: set[str]
    ) -> list[tuple[str, str, str, str | None]]:
        """The bases that advance with a write that went through: the fields it carried
        (`targets`: where their values were written; 'none' for fields already equal)."""
        return [(mapping, keap_id, d.field, d.merged_value) for d in decisions if d.write_to in targets]

    def outcome(
        self,
        mapping: str,
        target: str,
        row: dict[str, Any],
        status: str,
        http_status: int | None,
        answer: str | None,
        customcrm_id: str | None = None,
    ) -> Outcome:
        return Outcome(
            mapping=mapping,
            target=target,
            op=row["op"],
            keap_id=row.get("keap_id"),
            customcrm_id=customcrm_id or row.get("customcrm_id"),
            fields=list(row.get("fields") or []),
            payload=as_json(row.get("payload")),
            status=status,
            http_status=http_status,
            answer=answer,
        )

    def tally(self, outcome: Outcome) -> None:
        """Counts one write's outcome in the run's result. Called only by the thread that
        records (the Keap writers in the pool return outcomes and count nothing)."""
        summary = self.result.mappings[outcome.mapping]
        if outcome.status == "ok":
            if outcome.op == "create":
                summary.created += 1
                self.result.creates += 1
            elif outcome.op == "delete":
                summary.deleted += 1
            else:
                summary.updated += 1
        elif outcome.status == "stale":
            summary.stale += 1
        elif outcome.status == "failed":
            summary.failed += 1
            self.result.failures.setdefault(outcome.mapping, f"{outcome.target}: {outcome.answer}")
        elif outcome.status == "rejected":
            summary.rejected += 1
            self.note_rejection(outcome)

    def note_rejection(self, outcome: Outcome) -> None:
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
