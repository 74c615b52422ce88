"""The sync's own state, in schema `sync_state` of the DuckDB file. This module
alone creates and writes it; dbt reads it as sources and never writes it, so
`dbt build --full-refresh` can never lose a link.

| table | one row per | what for |
|---|---|---|
| links | linked pair (mapping, keap_id) | which Keap record is which Customcrm record, how and when linked |
| base_values | (mapping, keap_id, field) | the value last written or confirmed by the sync: the three-way merge's base |
| operations | write the push attempted | run, mapping, target, op, ids, fields, status, the API's answer |
| rejections | row a target refused | the reason, retried each run until it goes through |
| keap_create_intents | Keap create about to be sent | crash safety: found again before creating twice |
| runs | run of `crmsync sync` | when, how it ended, its summary |
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

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
    reason        varchar     not null,
    field_errors  json,
    http_status   integer,
    first_seen    timestamptz not null,
    last_seen     timestamptz not null,
    attempts      integer     not null,
    resolved_at   timestamptz,
    primary key (mapping, target, record_key, op)
);

create table if not exists {SCHEMA}.keap_create_intents (
    mapping       varchar     not null,
    customcrm_id  varchar     not null,
    natural_key   varchar,
    payload       json        not null,
    run_id        varchar     not null,
    intended_at   timestamptz not null,
    keap_id       varchar,                  -- known once Keap answered, or once found again
    primary key (mapping, customcrm_id)
);

create table if not exists {SCHEMA}.runs (
    run_id        varchar     not null primary key,
    started_at    timestamptz not null,
    finished_at   timestamptz,
    status        varchar     not null,     -- running, ok, rejected, failed
    summary       json
);
"""


def ensure_state(db_path: Path | str) -> None:
    """Create the state tables when missing (idempotent; never alters data)."""
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(db_path)) as con:
        con.execute(DDL)


@contextmanager
def connect(db_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection: DuckDB takes one writing process at a time."""
    con = duckdb.connect(str(db_path))
    try:
        yield con
    finally:
        con.close()
