"""The sync's own state, in schema `sync_state` of the warehouse (the DuckDB file, or
PostgreSQL: support/warehouse.py). This module
alone creates and writes it; dbt reads it as sources and never writes it, so
`dbt build --full-refresh` can never lose a link.

| table | one row per | what for |
|---|---|---|
| links | linked pair (mapping, keap_id) | which Keap record is which Customcrm record, how and when linked |
| base_values | (mapping, keap_id, field) | the value last written or confirmed by the sync: the three-way merge's base |
| operations | write the push attempted | run, mapping, target, op, ids, fields, status, the API's answer |
| rejections | row a target refused | the reason; sent again at once when its values change, unchanged after a growing wait (1 h doubling to 24 h) or `crmsync rejections retry`; set aside by a person while unchanged (`crmsync rejections ignore`) |
| keap_create_intents | Keap create about to be sent | crash safety: found again (by its marker) before creating twice; or held for review, with the reason |
| conflicts | field changed on both sides, per run | both values, the base, the winner and why |
| runs | run of `crmsync sync` | when, how it ended (ok, rejected, incomplete, failed; interrupted: killed, closed by the next run), its summary |
| quiet_inputs | (at most one) | the inputs of the last run that found nothing to do: the next run skips dbt when they did not change |
| clock_offsets | (run, system) | each server's clock against ours, measured from its answers' Date headers: the merge compares update times on one clock |

Retention (`RETENTION`): what the push wrote and the values it saw are personal data,
kept for `CRMSYNC_RETENTION_DAYS` (30 by default) and then blanked (`retention`,
at the end of every sync, or `crmsync retention --apply`): the rows stay as the audit of
what happened when, without the customers' data. Links and bases are the sync's working
state and are not aged out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from support.warehouse import Connection, connect, is_postgres
from support.warehouse import prefix as warehouse_prefix

SCHEMA = "sync_state"

DDL = f"""
create schema if not exists {SCHEMA};

create table if not exists {SCHEMA}.links (
    mapping          varchar     not null,  -- customers, contacts, orders, products
    keap_id          varchar     not null,
    customcrm_id     varchar     not null,
    link_rule        varchar     not null,  -- external_ref, natural_key, created_in_customcrm, created_in_keap
    linked_at        timestamptz not null,
    linked_in_run    varchar,
    last_synced_at   timestamptz,
    primary key (mapping, keap_id),
    unique (mapping, customcrm_id)
);

create table if not exists {SCHEMA}.base_values (
    mapping     varchar     not null,
    keap_id     varchar     not null,
    field       varchar     not null,
    value       varchar,                    -- canonical text; null is a value (empty)
    synced_at   timestamptz not null,
    run_id      varchar,
    primary key (mapping, keap_id, field)
);

create table if not exists {SCHEMA}.operations (
    run_id        varchar     not null,
    seq           bigint      not null,
    mapping       varchar     not null,
    target        varchar     not null,     -- keap, customcrm
    op            varchar     not null,     -- create, update, delete, link
    keap_id       varchar,
    customcrm_id  varchar,
    fields        varchar[],
    payload       json,
    status        varchar     not null,     -- ok, rejected, failed, held_back
    http_status   integer,
    answer        varchar,
    attempted_at  timestamptz not null,
    primary key (run_id, seq)
);

create table if not exists {SCHEMA}.rejections (
    mapping       varchar     not null,
    target        varchar     not null,
    record_key    varchar     not null,     -- keap_id, or customcrm_id for Customcrm-only records
    op            varchar     not null,
    reason        varchar,                  -- null once resolved and past the retention
    field_errors  json,
    http_status   integer,
    first_seen    timestamptz not null,
    last_seen     timestamptz not null,
    attempts      integer     not null,
    resolved_at   timestamptz,
    primary key (mapping, target, record_key, op)
);

-- the refused write, by a digest of its payload (payload_digest): sent again unchanged only once
-- retry_after has passed (null: at once); a changed payload goes at once. ignored_*: set aside by
-- a person (`crmsync rejections ignore`) while the payload stays the same
alter table {SCHEMA}.rejections add column if not exists payload_digest varchar;
alter table {SCHEMA}.rejections add column if not exists retry_after timestamptz;
alter table {SCHEMA}.rejections add column if not exists ignored_at timestamptz;
alter table {SCHEMA}.rejections add column if not exists ignored_by varchar;
alter table {SCHEMA}.rejections add column if not exists ignore_reason varchar;

create table if not exists {SCHEMA}.keap_create_intents (
    mapping       varchar     not null,
    customcrm_id  varchar     not null,
    natural_key   varchar,                  -- what the record is found again by, e.g. sku=SKU-1
    payload       json,                     -- null once fulfilled and past the retention
    run_id        varchar     not null,
    intended_at   timestamptz not null,
    keap_id       varchar,                  -- known once Keap answered, or once found again
    primary key (mapping, customcrm_id)
);
-- open: sent (or about to be), answer not recorded; fulfilled: linked (keap_id); held: for
-- review, a record may exist in Keap (reason); unsearchable: not sent, nothing could find it
-- again (reason; looked at again every run); abandoned: not in Keap, so the create goes again
alter table {SCHEMA}.keap_create_intents add column if not exists marker json;
alter table {SCHEMA}.keap_create_intents add column if not exists status varchar;
alter table {SCHEMA}.keap_create_intents add column if not exists reason varchar;
alter table {SCHEMA}.keap_create_intents add column if not exists resolved_at timestamptz;
update {SCHEMA}.keap_create_intents
    set status = case when keap_id is null then 'open' else 'fulfilled' end
    where status is null;

create table if not exists {SCHEMA}.conflicts (
    run_id           varchar     not null,
    mapping          varchar     not null,
    keap_id          varchar     not null,
    customcrm_id     varchar,
    field            varchar     not null,
    base_value       varchar,
    keap_value       varchar,
    customcrm_value  varchar,
    winner           varchar     not null,
    reason           varchar     not null,
    decided_at       timestamptz not null,
    primary key (run_id, mapping, keap_id, field)
);

create table if not exists {SCHEMA}.runs (
    run_id        varchar     not null primary key,
    started_at    timestamptz not null,
    finished_at   timestamptz,
    status        varchar     not null,     -- running, ok, rejected, incomplete, failed, interrupted
    summary       json
);

create table if not exists {SCHEMA}.clock_offsets (
    run_id         varchar     not null,
    system         varchar     not null,    -- keap, customcrm
    offset_s       double precision not null,  -- the server's clock less ours (positive: it is ahead)
    uncertainty_s  double precision not null,  -- the offset is known to lie within offset_s +- this
    samples        integer     not null,    -- answers whose Date header was read
    lowest_s       double precision,        -- the smallest and largest single estimates
    highest_s      double precision,
    measured_at    timestamptz not null,
    primary key (run_id, system)
);

create table if not exists {SCHEMA}.quiet_inputs (
    fingerprint   varchar     not null,     -- crmsync.fingerprint: raw data, state, dbt project, vars
    run_id        varchar     not null,
    recorded_at   timestamptz not null
);
"""


def ensure_state(db_path: Path | str) -> None:
    """Create the state tables when missing (idempotent; never alters data). A DuckDB file
    created here is readable by its owner only (it holds customers' personal data)."""
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    new = not Path(db_path).exists()
    with connect(db_path) as con:
        if new and not is_postgres(con):
            os.chmod(db_path, 0o600)
        con.execute(DDL)
        for table, column in BLANKABLE:  # created NOT NULL before retention existed
            required = con.execute(
                """select is_nullable = 'NO' from information_schema.columns
                   where table_schema = ? and table_name = ? and column_name = ?""",
                [SCHEMA, table, column],
            ).fetchone()
            if required and required[0]:
                con.execute(f"alter table {SCHEMA}.{table} alter column {column} drop not null")


BLANKABLE = (("rejections", "reason"), ("keap_create_intents", "payload"))

# a refused write is sent again unchanged after 1 hour, then 2, 4, ... up to 24 hours
RETRY_HOURS = (1, 24)


def payload_digest(payload: object) -> str:
    """What identifies a write's content: a refused write whose payload is the same is the same
    write (the push sends it again only when due, or not at all while set aside)."""
    import hashlib
    import json

    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RetentionRule:
    table: str  # schema.table
    blanks: str  # what is blanked, for people
    assign: str  # the SET clause
    age: str  # the timestamp a row's age is counted from
    holds: str  # the rows that still hold something to blank
    postgres: tuple[str, str] | None = None  # (assign, holds) where PostgreSQL spells them otherwise


RETENTION = (
    RetentionRule(f"{SCHEMA}.operations", "payload, answer", "payload = null, answer = null",
                  "attempted_at", "(payload is not null or answer is not null)"),
    RetentionRule(f"{SCHEMA}.keap_create_intents", "payload, marker, reason (settled creates)",
                  "payload = null, natural_key = null, marker = null, reason = null", "intended_at",
                  "coalesce(status, case when keap_id is null then 'open' else 'fulfilled' end) "
                  "in ('fulfilled', 'abandoned') and (payload is not null or natural_key is not null "
                  "or marker is not null or reason is not null)"),
    RetentionRule(f"{SCHEMA}.rejections", "reason, field_errors, ignore_reason (resolved)",
                  "reason = null, field_errors = null, ignore_reason = null", "resolved_at",
                  "resolved_at is not null and (reason is not null or field_errors is not null "
                  "or ignore_reason is not null)"),
    RetentionRule(f"{SCHEMA}.conflicts", "base_value, keap_value, customcrm_value",
                  "base_value = null, keap_value = null, customcrm_value = null", "decided_at",
                  "(base_value is not null or keap_value is not null or customcrm_value is not null)"),
    RetentionRule(f"{SCHEMA}.runs", "summary: the rejections listed",
                  """summary = json_merge_patch(summary, '{"push": {"rejections": null}}')""", "started_at",
                  "coalesce(json_array_length(summary, '$.push.rejections'), 0) > 0",
                  postgres=("summary = cast(cast(summary as jsonb) #- '{push,rejections}' as json)",
                            "json_typeof(summary -> 'push' -> 'rejections') = 'array' "
                            "and json_array_length(summary -> 'push' -> 'rejections') > 0")),
    RetentionRule("raw_keap.ingest_rejections", "record", "record = null", "rejected_at", "record is not null"),
    RetentionRule("raw_customcrm.ingest_rejections", "record", "record = null", "rejected_at", "record is not null"),
)  # fmt: skip


@dataclass
class Expiring:
    """Rows of one table whose personal data is older than the retention."""

    table: str
    blanks: str
    rows: int
    oldest: datetime | None


def retention(db_path: Path | str, days: int, apply: bool = False) -> list[Expiring]:
    """Per table: the rows holding personal data older than `days` days, and the oldest
    such row's time; with `apply`, that data is set to null (the rows stay), in one
    transaction."""
    found: list[Expiring] = []
    with connect(db_path) as con:
        prefix = warehouse_prefix()  # a tenant's schemas on PostgreSQL: named here without it
        present = {  # raw_*.ingest_rejections exist once dlt created them
            f"{schema[len(prefix) :]}.{table}.{column}"
            for schema, table, column in con.execute(
                "select table_schema, table_name, column_name from information_schema.columns"
            ).fetchall()
            if schema.startswith(prefix)
        }
        con.execute("begin transaction")
        try:
            for rule in RETENTION:
                if f"{rule.table}.{rule.age}" not in present:
                    continue
                assign, holds = (
                    rule.postgres if rule.postgres and is_postgres(con) else (rule.assign, rule.holds)
                )
                where = f"{holds} and {rule.age} < now() - cast(? as integer) * interval '1 day'"
                rows, oldest = con.execute(  # type: ignore[misc]
                    f"select count(*), min({rule.age}) from {rule.table} where {where}", [days]
                ).fetchone()
                if rows and apply:
                    con.execute(f"update {rule.table} set {assign} where {where}", [days])
                found.append(Expiring(rule.table, rule.blanks, rows, oldest))
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return found


def new_run_id() -> str:
    import uuid
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


INTERRUPTED = "the run ended without closing its row (killed, or the file was locked)"


def start_run(db_path: Path | str, run_id: str) -> None:
    """Open the run's row. Rows still `running` belong to runs that ended without closing
    them (killed, or the file was locked by another program as they ended): one crmsync at
    a time holds the state file (crmsync.lock), so none of them is still going. They are
    closed as `interrupted`, at the time this run found them (when they really ended is
    not known)."""
    import json

    with connect(db_path) as con:
        for stale, summary in con.execute(
            f"select run_id, summary from {SCHEMA}.runs where status = 'running'"
        ).fetchall():
            closed = {**(json.loads(summary) if summary else {}), "error": INTERRUPTED, "closed_by": run_id}
            con.execute(
                f"""update {SCHEMA}.runs set status = 'interrupted', finished_at = now(), summary = ?
                    where run_id = ?""",
                [json.dumps(closed), stale],
            )
        con.execute(
            f"insert into {SCHEMA}.runs (run_id, started_at, status) values (?, now(), 'running')", [run_id]
        )


def finish_run(db_path: Path | str, run_id: str, status: str, summary: object) -> None:
    import json

    from connectors.errors import redact  # never a credential written into a URL, in the state either

    with connect(db_path) as con:
        con.execute(
            f"update {SCHEMA}.runs set finished_at = now(), status = ?, summary = ? where run_id = ?",
            [status, redact(json.dumps(summary, default=str)), run_id],
        )


@dataclass
class Outcome:
    """What happened to one row of a sync_* model, to be recorded."""

    mapping: str
    target: str  # keap | customcrm
    op: str  # create | update | delete | link
    keap_id: str | None
    customcrm_id: str | None
    fields: list[str]
    payload: object
    status: str  # ok | rejected | failed | held_back | stale
    http_status: int | None = None
    answer: str | None = None
    field_errors: list[dict[str, str]] | None = None
    link_rule: str | None = None  # set when the outcome establishes a link


class Recorder:
    """Writes outcomes, links and bases in one transaction per batch: a batch's results
    are recorded together or not at all, and a base advances only with its write."""

    def __init__(self, db_path: Path | str, run_id: str) -> None:
        self.db_path = db_path
        self.run_id = run_id

    def record(self, outcomes: list[Outcome], bases: list[tuple[str, str, str, str | None]]) -> None:
        """outcomes: the writes; bases: (mapping, keap_id, field, value) to upsert. Set-based:
        one statement per table, whatever the batch's size. A new link also fulfils the Keap
        create intent of its Customcrm record, in the same transaction: an intent is never
        closed without its link, nor a link left with its intent open."""
        import json

        if not outcomes and not bases:
            return
        with connect(self.db_path) as con:
            con.execute("begin transaction")
            try:
                seq = con.execute(
                    f"select coalesce(max(seq), 0) from {SCHEMA}.operations where run_id = ?", [self.run_id]
                ).fetchone()[0]  # type: ignore[index]
                operations = [
                    (self.run_id, seq + n, o.mapping, o.target, o.op, o.keap_id, o.customcrm_id, o.fields,
                     json.dumps(o.payload) if o.payload is not None else None, o.status, o.http_status,
                     (o.answer or "")[:2000] or None)
                    for n, o in enumerate(outcomes, start=1)
                ]  # fmt: skip
                _insert(
                    con, f"insert into {SCHEMA}.operations select *, now() from", operations, OPERATION_TYPES
                )
                links = [
                    (o.mapping, o.keap_id, o.customcrm_id, o.link_rule, self.run_id)
                    for o in outcomes
                    if o.status == "ok" and o.link_rule and o.keap_id and o.customcrm_id
                ]
                _insert(
                    con,
                    f"""insert into {SCHEMA}.links
                        select col0, col1, col2, col3, now(), col4, now() from""",
                    links, ["varchar"] * 5, suffix="on conflict (mapping, keap_id) do nothing",
                )  # fmt: skip
                _insert(
                    con,
                    f"""update {SCHEMA}.keap_create_intents set keap_id = linked.k, status = 'fulfilled',
                            reason = null, resolved_at = now()
                        from (select col0 as m, col1 as c, col2 as k from""",
                    [(m, c, k) for m, k, c, _, _ in links], ["varchar"] * 3,
                    suffix=""") as linked
                        where mapping = linked.m and customcrm_id = linked.c and status in ('open', 'held')""",
                )  # fmt: skip
                resolved = [  # a Keap create was refused under its Customcrm id: it had no Keap id yet
                    (o.mapping, o.target, key)
                    for o in outcomes
                    if o.status == "ok"
                    for key in {o.keap_id or o.customcrm_id, o.customcrm_id if o.op == "create" else None}
                    if key
                ]
                _insert(
                    con,
                    f"""update {SCHEMA}.rejections set resolved_at = now()
                        from (select col0 as m, col1 as t, col2 as k from""",
                    resolved, ["varchar"] * 3,
                    suffix=""") as done
                        where mapping = done.m and target = done.t and record_key = done.k
                            and resolved_at is null""",
                )  # fmt: skip
                for outcome in outcomes:
                    if outcome.status == "rejected":
                        self._reject(con, outcome)
                _insert(
                    con,
                    f"""insert into {SCHEMA}.base_values select col0, col1, col2, col3, now(), ? from""",
                    bases, ["varchar"] * 4, leading=[self.run_id],
                    suffix="""on conflict (mapping, keap_id, field) do update
                        set value = excluded.value, synced_at = excluded.synced_at, run_id = excluded.run_id""",
                )  # fmt: skip
                _insert(
                    con,
                    f"""update {SCHEMA}.links set last_synced_at = now()
                        from (select distinct col0 as m, col1 as k from""",
                    [(m, k) for m, k, _, _ in bases], ["varchar"] * 2,
                    suffix=") as touched where mapping = touched.m and keap_id = touched.k",
                )  # fmt: skip
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise

    def _reject(self, con: Connection, outcome: Outcome) -> None:
        """Record the refusal with a digest of what was sent: the same write is sent again only
        after a wait that doubles with every refusal (1 h up to 24 h, RETRY_HOURS) or when a
        person asks (`crmsync rejections retry`); a changed one at once. A person's decision to
        set it aside was about the write it saw: a different write refused is open again."""
        import json

        con.execute(
            f"""insert into {SCHEMA}.rejections (mapping, target, record_key, op, reason, field_errors,
                    http_status, first_seen, last_seen, attempts, resolved_at, payload_digest, retry_after)
                values (?, ?, ?, ?, ?, ?, ?, now(), now(), 1, null, ?, now() + {RETRY_HOURS[0]} * interval '1 hour')
                on conflict (mapping, target, record_key, op) do update set
                    reason = excluded.reason, field_errors = excluded.field_errors,
                    http_status = excluded.http_status, last_seen = now(),
                    attempts = {SCHEMA}.rejections.attempts + 1, resolved_at = null,
                    retry_after = now() + cast(least({RETRY_HOURS[0]} * pow(2, {SCHEMA}.rejections.attempts),
                                                   {RETRY_HOURS[1]}) as integer) * interval '1 hour',
                    ignored_at = case when {SCHEMA}.rejections.payload_digest = excluded.payload_digest
                                      then {SCHEMA}.rejections.ignored_at end,
                    ignored_by = case when {SCHEMA}.rejections.payload_digest = excluded.payload_digest
                                      then {SCHEMA}.rejections.ignored_by end,
                    ignore_reason = case when {SCHEMA}.rejections.payload_digest = excluded.payload_digest
                                         then {SCHEMA}.rejections.ignore_reason end,
                    payload_digest = excluded.payload_digest""",
            [outcome.mapping, outcome.target, outcome.keap_id or outcome.customcrm_id, outcome.op,
             outcome.answer or "rejected", json.dumps(outcome.field_errors or []), outcome.http_status,
             payload_digest(outcome.payload)],
        )  # fmt: skip

    def record_conflicts(self, rows: list[dict[str, object]]) -> None:
        """The conflicts dbt resolved for this run, kept for good (the mart is recomputed)."""
        if not rows:
            return
        names = ("mapping", "keap_id", "customcrm_id", "field", "base_value", "keap_value", "customcrm_value",
                 "winner", "reason")  # fmt: skip
        with connect(self.db_path) as con:
            _insert(con, f"insert into {SCHEMA}.conflicts select ?, *, now() from",
                    [tuple(r[n] for n in names) for r in rows], ["varchar"] * len(names), leading=[self.run_id],
                    suffix="on conflict do nothing")  # fmt: skip

    # --- Keap create intents: written before the request, so a crash never creates twice ---
    def intend_keap_create(
        self,
        mapping: str,
        customcrm_id: str,
        payload: object,
        marker: dict[str, object] | None,
        status: str = "open",
        reason: str | None = None,
    ) -> None:
        """An intent to create (open), or a create held for review (held, with the reason).
        `marker`: what finds the record again in Keap (reverse_etl.keap_search)."""
        import json

        label = marker.get("label") if marker else None
        with connect(self.db_path) as con:
            con.execute(
                f"""insert into {SCHEMA}.keap_create_intents
                        (mapping, customcrm_id, natural_key, payload, run_id, intended_at, keap_id, marker,
                         status, reason, resolved_at)
                    values (?, ?, ?, ?, ?, now(), null, ?, ?, ?, null)
                    on conflict (mapping, customcrm_id) do update set natural_key = excluded.natural_key,
                        payload = excluded.payload, run_id = excluded.run_id, intended_at = now(),
                        keap_id = null, marker = excluded.marker, status = excluded.status,
                        reason = excluded.reason, resolved_at = null""",
                [mapping, customcrm_id, label, json.dumps(payload), self.run_id,
                 json.dumps(marker) if marker else None, status, reason],
            )  # fmt: skip

    def open_intents(self, mapping: str) -> list[dict[str, object]]:
        """Creates sent, or about to be, whose answer was never recorded."""
        with connect(self.db_path) as con:
            cursor = con.execute(
                f"""select customcrm_id, marker, intended_at from {SCHEMA}.keap_create_intents
                    where mapping = ? and status = 'open' order by customcrm_id""",
                [mapping],
            )
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def held_intents(self, mapping: str) -> dict[str, str]:
        """customcrm_id -> why its create is held for review (a record may exist in Keap: never
        sent again until a link closes the intent)."""
        with connect(self.db_path) as con:
            rows = con.execute(
                f"""select customcrm_id, reason from {SCHEMA}.keap_create_intents
                    where mapping = ? and status = 'held'""",
                [mapping],
            ).fetchall()
        return {str(c): str(r) for c, r in rows}

    def settle_intent(self, mapping: str, customcrm_id: str, status: str, reason: str) -> None:
        """An open intent found to be held for review, or abandoned (not in Keap: created again)."""
        with connect(self.db_path) as con:
            con.execute(
                f"""update {SCHEMA}.keap_create_intents set status = ?, reason = ?, resolved_at = now()
                    where mapping = ? and customcrm_id = ?""",
                [status, reason, mapping, customcrm_id],
            )


OPERATION_TYPES = ("varchar", "bigint", "varchar", "varchar", "varchar", "varchar", "varchar", "varchar[]",
                   "json", "varchar", "integer", "varchar")  # fmt: skip


def _insert(con: Connection, head: str, rows: Sequence[Sequence[object]], types: Sequence[str],
            suffix: str = "", leading: list[object] | None = None) -> None:  # fmt: skip
    """`head (select unnest(?) as col0, unnest(?) as col1, ...) as v suffix`: the rows go in as
    one typed list per column, so a statement binds a handful of parameters whatever the
    batch's size (DuckDB's executemany goes row by row; a VALUES list binds every cell).
    PostgreSQL's unnest flattens a list of lists: there the rows go in as pages of a VALUES
    list (PostgresConnection.insert_rows)."""
    if not rows:
        return
    if is_postgres(con):
        con.insert_rows(head, rows, types, suffix, leading or [])
        return
    columns = ", ".join(f"unnest(?::{kind}[]) as col{n}" for n, kind in enumerate(types))
    params = [*(leading or []), *(list(column) for column in zip(*rows, strict=True))]
    con.execute(f"{head} (select {columns}) as v {suffix}", params)


def record_clocks(db_path: Path | str, run_id: str, readings: dict[str, dict[str, float]]) -> None:
    """This run's measurement of each server's clock (system -> ClockReading.as_dict()),
    replaced as the run reads more answers."""
    rows = [
        (run_id, system, r["offset_s"], r["uncertainty_s"], r["samples"], r["lowest_s"], r["highest_s"])
        for system, r in readings.items()
    ]
    if not rows:
        return
    with connect(db_path) as con:
        _insert(
            con,
            f"insert into {SCHEMA}.clock_offsets select *, now() from",
            rows,
            [
                "varchar",
                "varchar",
                "double precision",
                "double precision",
                "integer",
                "double precision",
                "double precision",
            ],
            suffix="""on conflict (run_id, system) do update set offset_s = excluded.offset_s,
                uncertainty_s = excluded.uncertainty_s, samples = excluded.samples,
                lowest_s = excluded.lowest_s, highest_s = excluded.highest_s, measured_at = excluded.measured_at""",
        )


def last_quiet(db_path: Path) -> tuple[str, str] | None:
    """(fingerprint, run_id) of the last run that found nothing to do, if nothing ran since."""
    with connect(db_path) as con:
        row = con.execute(f"select fingerprint, run_id from {SCHEMA}.quiet_inputs").fetchone()
    return (str(row[0]), str(row[1])) if row else None


def record_quiet(db_path: Path, fingerprint: str | None, run_id: str) -> None:
    """Remember the inputs of a run that found nothing to do, or forget them (None)."""
    with connect(db_path) as con:
        con.execute("begin")
        con.execute(f"delete from {SCHEMA}.quiet_inputs")
        if fingerprint is not None:
            con.execute(
                f"insert into {SCHEMA}.quiet_inputs (fingerprint, run_id, recorded_at) values (?, ?, now())",
                [fingerprint, run_id],
            )
        con.execute("commit")


# --- rejections people act on (crmsync rejections) ---------------------------------------------


@dataclass(frozen=True)
class SetAside:
    """An open rejection the push does not send again while the payload is the same."""

    digest: str
    why: str  # ignored by ...: reason | rejected N times; next try at ...


def set_aside(db_path: Path | str, mapping: str, target: str) -> dict[tuple[str, str], SetAside]:
    """(record_key, op) -> the open rejections of this mapping and target that wait: set aside
    by a person, or refused and not due again yet (`retry_after`)."""
    with connect(db_path) as con:
        rows = con.execute(
            f"""select record_key, op, payload_digest, ignored_at is not null, ignored_by, ignore_reason,
                       attempts, retry_after
                from {SCHEMA}.rejections
                where mapping = ? and target = ? and resolved_at is null and payload_digest is not null
                    and (ignored_at is not null or retry_after > now())""",
            [mapping, target],
        ).fetchall()
    found = {}
    for key, op, digest, ignored, by, reason, attempts, retry_after in rows:
        after = retry_after.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if retry_after else None
        why = (f"ignored by {by or 'someone'}: {reason}" if ignored
               else f"refused {attempts} time{'s' if attempts != 1 else ''}; sent again after {after}")  # fmt: skip
        found[(str(key), str(op))] = SetAside(str(digest), why)
    return found


REJECTION_COLUMNS = ("key", "mapping", "target", "op", "record_key", "state", "attempts", "first_seen",
                     "last_seen", "retry_after", "reason", "field_errors", "http_status", "ignored_by",
                     "ignore_reason", "ignored_at", "resolved_at")  # fmt: skip


def rejections(con: Connection, everything: bool = False) -> list[dict[str, object]]:
    """The rejections people see (`crmsync rejections`), open ones first; `everything`: resolved
    ones too. key: `mapping/target/record_key`, what `crmsync rejections retry|ignore` take.
    state: open (sent again when its values change or after retry_after), ignored, resolved."""
    rows = con.execute(
        f"""select mapping || '/' || target || '/' || record_key, mapping, target, op, record_key,
                   case when resolved_at is not null then 'resolved'
                        when ignored_at is not null then 'ignored' else 'open' end,
                   attempts, first_seen, last_seen, retry_after, reason, field_errors, http_status,
                   ignored_by, ignore_reason, ignored_at, resolved_at
            from {SCHEMA}.rejections
            {"" if everything else "where resolved_at is null"}
            order by resolved_at is not null, mapping, target, record_key, op"""
    ).fetchall()
    return [dict(zip(REJECTION_COLUMNS, row, strict=True)) for row in rows]


class UnknownRejection(Exception):
    """A key that names no open rejection; the message says which and what to do."""


def _match(con: Connection, keys: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(mapping, target, record_key, op) of the open rejections the keys name: the whole key
    `mapping/target/record_key`, or a record key alone when it names one rejection."""
    open_rows = con.execute(
        f"select mapping, target, record_key, op from {SCHEMA}.rejections where resolved_at is null"
    ).fetchall()
    chosen: list[tuple[str, str, str, str]] = []
    for key in keys:
        found = [r for r in open_rows if key in ("/".join(r[:3]), r[2])]
        if not found:
            raise UnknownRejection(
                f"no open rejection {key!r}: `crmsync rejections` lists them with their keys"
            )
        if len({r[:3] for r in found}) > 1:
            names = ", ".join(sorted("/".join(r[:3]) for r in found))
            raise UnknownRejection(f"{key!r} names several rejections ({names}): give the whole key")
        chosen += [tuple(r) for r in found if r not in chosen]  # type: ignore[misc]
    return chosen


def retry_rejections(db_path: Path | str, keys: Sequence[str]) -> list[str]:
    """Mark open rejections due now (no keys: every open one not set aside by a person): the next
    sync sends them, whatever their wait; a named ignored one is no longer ignored. Returns the keys."""
    with connect(db_path) as con:
        if keys:
            chosen = _match(con, keys)
        else:
            chosen = [tuple(r) for r in con.execute(  # type: ignore[misc]
                f"""select mapping, target, record_key, op from {SCHEMA}.rejections
                    where resolved_at is null and ignored_at is null""").fetchall()]  # fmt: skip
        for mapping, target, record_key, op in chosen:
            con.execute(
                f"""update {SCHEMA}.rejections set retry_after = null, ignored_at = null, ignored_by = null,
                        ignore_reason = null
                    where mapping = ? and target = ? and record_key = ? and op = ?""",
                [mapping, target, record_key, op],
            )
    return sorted({"/".join(c[:3]) for c in chosen})


def ignore_rejections(db_path: Path | str, keys: Sequence[str], by: str, reason: str) -> list[str]:
    """Set open rejections aside: the push does not send them again while their payload stays
    the same (a changed record is sent, and a new refusal is open again). Returns the keys."""
    with connect(db_path) as con:
        chosen = _match(con, keys)
        for mapping, target, record_key, op in chosen:
            con.execute(
                f"""update {SCHEMA}.rejections set ignored_at = now(), ignored_by = ?, ignore_reason = ?
                    where mapping = ? and target = ? and record_key = ? and op = ?""",
                [by, reason, mapping, target, record_key, op],
            )
    return sorted({"/".join(c[:3]) for c in chosen})


# --- run history (crmsync runs) ----------------------------------------------------------------

RUN_COLUMNS = ("run_id", "started_at", "finished_at", "seconds", "status", "summary")


def runs(con: Connection, limit: int) -> list[dict[str, object]]:
    """The last `limit` runs, newest first, with their summary parsed."""
    import json

    rows = con.execute(
        f"""select run_id, started_at, finished_at, null, status, summary
            from {SCHEMA}.runs order by started_at desc, run_id desc limit ?""",
        [limit],
    ).fetchall()
    found = []
    for row in rows:
        run = dict(zip(RUN_COLUMNS, row, strict=True))
        if run["started_at"] and run["finished_at"]:
            run["seconds"] = round((run["finished_at"] - run["started_at"]).total_seconds(), 1)  # type: ignore[operator]
        run["summary"] = json.loads(str(run["summary"])) if run["summary"] else {}
        found.append(run)
    return found
