"""The push: writes what the dbt `sync_*` models say each system needs, exactly once,
and records what it wrote.

Per mapping, parents before children (customers, contacts, orders, products):

0. each target recovers what an earlier run left unsettled: Keap creates whose answer was
   lost (a crash, a dropped connection) are found again by their marker and linked
   (reverse_etl.keap_search), before anything is sent;
1. record the links dbt matched (ExternalRefs.keap, a unique natural key): no API call;
2. the Customcrm target (reverse_etl.customcrm_target): creates, merge-patch updates and deletes in batches of up to 100 operations
   and 1 MiB, each create with an Idempotency-Key naming the record and its body, each
   update and delete with If-Match (a 412 leaves the row for the next run, which sees the
   newer value, unless the record already holds what the write carries: a batch resent
   after its answer was lost); a child whose parent this push has just created gets the
   parent's new id from its link (`unlinked_parents`), not from another round of dbt;
3. the Keap target (reverse_etl.keap_target): PATCH with update_mask, a few at a time, in chunks of about four seconds, each
   after a re-read of what changed in Keap since the last one: records edited since the
   extract are held back, so an edit made during the run is never overwritten
   (reverse_etl.keap_watch). A create (the reverse flow, off by default) is recorded as an
   intent with its marker first, so a crash never creates twice;
4. with each batch's results, in one transaction: the operations, new links (and the
   intents they fulfil), rejections, and the bases of the fields whose write went through
   (or that needed none).

This module is the planner: it reads only the marts the exposures `push_customcrm` and
`push_keap` declare, hands each target its rows, and returns a PushResult; it prints
nothing (the CLI does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from sys import intern

from connectors.customcrm import CustomcrmClient
from connectors.errors import ApiError
from connectors.keap import KeapClient
from reverse_etl.customcrm_target import CustomcrmTarget, RecordBehind
from reverse_etl.keap_target import KeapTarget
from reverse_etl.results import MAPPINGS, MappingSummary, ProgressCallback, PushResult, merge_results
from reverse_etl.state import Outcome, Recorder
from reverse_etl.targets import STOP_THE_RUN, Decision, Decisions, PushContext, Target, query
from support.warehouse import connect

__all__ = [
    "MAPPINGS",
    "STOP_THE_RUN",
    "MappingSummary",
    "ProgressCallback",
    "PushResult",
    "Pusher",
    "RecordBehind",
    "merge_results",
]


class Pusher:
    """Per mapping, parents first: each target recovers, the conflicts and the links dbt
    matched are recorded, then each target pushes; fields already equal become bases."""

    def __init__(
        self,
        db_path: Path,
        run_id: str,
        keap: KeapClient,
        customcrm: CustomcrmClient,
        progress: ProgressCallback | None = None,
        mappings: Sequence[str] = MAPPINGS,
        blocked: dict[str, str] | None = None,
        keap_quota_reserve: int = 0,
    ) -> None:
        self.mappings = tuple(mappings)  # a subset pushes only those (the peer benchmark)
        self.blocked = dict(blocked or {})  # mapping -> why it must not be pushed this run
        self.ctx = PushContext(db_path, Recorder(db_path, run_id), PushResult(), progress)
        self.targets: tuple[Target, ...] = (
            CustomcrmTarget(self.ctx, customcrm),
            KeapTarget(self.ctx, keap, keap_quota_reserve),
        )

    @property
    def result(self) -> PushResult:
        return self.ctx.result

    def run(self) -> PushResult:
        # one database instance for the whole push: the short connections below reuse it
        # instead of opening the file again for every batch (~25 ms each)
        with connect(self.ctx.db_path):
            return self._run()

    def _run(self) -> PushResult:
        for mapping in self.mappings:
            if mapping in self.blocked:
                self.ctx.result.errors[mapping] = f"not pushed this run: {self.blocked[mapping]}"
                continue
            try:
                self._push_mapping(mapping)
            except STOP_THE_RUN:
                raise
            except ApiError as exc:  # one resource refused: this mapping stops, the others go on
                self.ctx.result.errors[mapping] = f"stopped: {exc}; the next run writes the rest"
        return self.ctx.result

    def _push_mapping(self, mapping: str) -> None:
        """One mapping's writes, in order; what went through is recorded batch by batch, so
        an error part-way leaves nothing advanced past what was really written."""
        for target in self.targets:
            target.recover(mapping)
        conflicts = query(
            self.ctx.db_path,
            """select mapping, keap_id, customcrm_id, field, base_value, keap_value, customcrm_value,
                      winner, reason
               from main.sync_conflicts where mapping = ?""",
            [mapping],
        )
        self.ctx.recorder.record_conflicts(conflicts)
        self.ctx.result.mappings[mapping].conflicts += len(conflicts)
        decisions = self._decisions(mapping)
        self._link_matches(mapping)
        for target in self.targets:
            target.push(mapping, decisions)
        self._confirm_equal(mapping, decisions)

    def _decisions(self, mapping: str) -> Decisions:
        """Per pair, the fields whose base must move: new, or different from the merged value."""
        by_pair: dict[str, list[Decision]] = defaultdict(list)
        with connect(self.ctx.db_path) as con:
            cursor = con.execute(
                """select keap_id, customcrm_id, field, merged_value, write_to
                   from main.sync_field_decisions
                   where mapping = ? and (not has_base or base_value is distinct from merged_value)""",
                [mapping],
            )
            while chunk := cursor.fetchmany(10_000):
                for keap_id, customcrm_id, field, merged_value, write_to in chunk:
                    # a few distinct names, a million rows: one string object each
                    decision = Decision(keap_id, customcrm_id, intern(field), merged_value, intern(write_to))
                    by_pair[keap_id or "new:" + customcrm_id].append(decision)
        return by_pair

    def _link_matches(self, mapping: str) -> None:
        matched = query(
            self.ctx.db_path,
            "select keap_id, customcrm_id, link_rule from main.sync_new_links where mapping = ?",
            [mapping],
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
        self.ctx.recorder.record(outcomes, [])
        self.ctx.result.mappings[mapping].linked += len(outcomes)

    def _confirm_equal(self, mapping: str, decisions: Decisions) -> None:
        """Fields both sides already agree on become the base of linked pairs (no API call):
        a new link, a field changed on both sides to the same value."""
        bases = [
            (mapping, d.keap_id, d.field, d.merged_value)
            for pair in decisions.values()
            for d in pair
            if d.write_to == "none" and d.keap_id and d.customcrm_id
        ]
        self.ctx.recorder.record([], bases)
