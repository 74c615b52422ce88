"""Where the sync keeps its data: the DuckDB file (the default), or a PostgreSQL database
when CRMSYNC_WAREHOUSE is a postgresql:// URL. Every step opens a short connection, does
its work and closes it again (a DuckDB file takes one writing process at a time).

Both connections answer the same calls: `execute(sql, params)` with `?` placeholders,
then `fetchone`, `fetchall` and `description`. On PostgreSQL the connection runs in
autocommit, so `begin` ... `commit` in the SQL are the transaction, as on DuckDB; its
session's time zone is UTC, as DuckDB's is here; its search path starts with `main`, as
DuckDB's default schema is; and JSON comes back as text, as DuckDB gives it. The SQL the
Python modules send is written to run on both (`is_postgres` where it cannot be)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb

ENV = "CRMSYNC_WAREHOUSE"

# The schemas the sync's SQL names. On PostgreSQL a prefix (CRMSYNC_SCHEMA_PREFIX) moves all
# of them at once: a tenant's own (`acme_`: crmsync.tenants), a plan's scratch copy
# (`plan_1a2b3c4d_`, before a tenant's: crmsync.run.scratch_copy). The connection maps the
# names the SQL says to the prefixed ones; dbt (generate_schema_name, the sources) and dlt
# (the datasets) read the prefix too.
SCHEMAS = ("raw_keap", "raw_customcrm", "staging", "intermediate", "main", "reference", "sync_state")
PREFIX_ENV = "CRMSYNC_SCHEMA_PREFIX"
_NAMES = "|".join(SCHEMAS)
_SCHEMA_NAMES = re.compile(
    rf"""(?<![\w."])({_NAMES})(?=\.)"""  # main.link_contacts
    rf"|'((?:{_NAMES})(?:_staging)?)'"  # table_schema = 'main', 'raw_keap_staging'
    rf"|(?<=create schema if not exists )({_NAMES})\b"  # the state's DDL
)


def prefix() -> str:
    """The schemas' prefix on PostgreSQL ('' but for a tenant's schemas or a plan's copy)."""
    return os.environ.get(PREFIX_ENV, "") if url() else ""


def physical(sql: str) -> str:
    """`sql` with the sync's schema names (`main.link_contacts`, `table_schema = 'main'`)
    prefixed, when a prefix is set."""
    found = prefix()
    if not found:
        return sql
    return _SCHEMA_NAMES.sub(
        lambda m: f"'{found}{m.group(2)}'" if m.group(2) else found + (m.group(1) or m.group(3)), sql
    )


# a schema name qualifying a table, as PostgreSQL folds an unquoted name (`Sync_State.runs`)
_SCHEMA_DOT = re.compile(rf"""(?<![\w."$])({_NAMES})(?=\s*\.)""", re.I)
# what a query writes as it is: literals ('', E'' and $$ strings), quoted names, comments
_AS_WRITTEN = re.compile(
    r"""(?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/"""
    r"""|\$(\w*)\$.*?\$\1\$""",
    re.S,
)
_QUOTED_SCHEMA = re.compile(rf'"({_NAMES})"')


def physical_query(sql: str) -> str:
    """An analyst's query (`crmsync sql --tenant`) with the schema names it qualifies its
    tables by prefixed (`sync_state.runs`, `SYNC_STATE.runs`, `"sync_state".runs`), and
    nothing else: unlike `physical`, no text in its literals or comments changes (`where
    city = 'main'` stays), nor a quoted name that is not a schema's."""
    found = prefix()
    if not found:
        return sql

    def names(text: str) -> str:
        return _SCHEMA_DOT.sub(lambda m: found + m.group(1).lower(), text)

    parts, position = [], 0
    for match in _AS_WRITTEN.finditer(sql):
        parts.append(names(sql[position : match.start()]))
        token = match.group(0)
        quoted = _QUOTED_SCHEMA.fullmatch(token)
        if quoted and re.match(r"\s*\.", sql[match.end() :]):  # a quoted schema name: "main".t
            token = f'"{found}{quoted.group(1)}"'
        parts.append(token)
        position = match.end()
    parts.append(names(sql[position:]))
    return "".join(parts)


def url() -> str | None:
    """The PostgreSQL warehouse's URL, or None for the DuckDB file."""
    return os.environ.get(ENV) or None


def use(warehouse: str | None) -> None:
    """Make `warehouse` (Settings.warehouse: a postgresql:// URL, or None for the DuckDB file)
    the one this process's steps connect to, dbt and dlt included."""
    if warehouse:
        os.environ[ENV] = warehouse
    else:
        os.environ.pop(ENV, None)


@contextmanager
def using(warehouse: str | None, schema_prefix: str = "") -> Iterator[None]:
    """This process's steps on `warehouse` (None: the DuckDB file) and its schemas with
    `schema_prefix`, for the block; the process's own values are back afterwards."""
    before = {name: os.environ.get(name) for name in (ENV, PREFIX_ENV)}
    try:
        for name, value in ((ENV, warehouse), (PREFIX_ENV, schema_prefix)):
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def tls(warehouse: str) -> dict[str, str]:
    """The URL's TLS parameters (`?sslmode=verify-full&sslrootcert=...`), for dbt's connection,
    whose profile takes them apart from the URL."""
    from urllib.parse import parse_qsl

    return {k: v for k, v in parse_qsl(urlsplit(warehouse).query) if k in TLS_PARAMETERS}


def parts(warehouse: str) -> dict[str, str]:
    """host, port, user, password, database of a postgresql:// URL (dbt's profile takes them
    apart: dbt_project/profiles.yml)."""
    found = urlsplit(warehouse)
    return {
        "host": found.hostname or "127.0.0.1",
        "port": str(found.port or 5432),
        "user": unquote(found.username or ""),
        "password": unquote(found.password or ""),
        "database": unquote(found.path.lstrip("/")) or "postgres",
    }


_QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""")


def _pyformat(sql: str) -> str:
    """`?` placeholders as psycopg2's `%s` (not inside a quoted literal or name), and every
    literal % doubled."""
    pieces = _QUOTED.split(sql)
    return "".join(
        piece.replace("%", "%%") if piece[:1] in ("'", '"') else piece.replace("%", "%%").replace("?", "%s")
        for piece in pieces
    )


class PostgresConnection:
    """A psycopg2 connection that answers as a DuckDB connection does (see the module)."""

    dialect = "postgres"

    def __init__(self, warehouse: str, read_only: bool = False) -> None:
        import psycopg2
        import psycopg2.extensions
        import psycopg2.extras

        # unqualified names find the marts, as on DuckDB, whose default schema is main; no
        # JIT, which compiles for longer than these queries over the marts run (crmsync/dbt.py)
        options = "-c timezone=UTC -c search_path=main,public -c jit=off" + (
            " -c default_transaction_read_only=on" if read_only else ""
        )
        self._con = psycopg2.connect(warehouse, options=options, connect_timeout=10, keepalives=1,
                                     keepalives_idle=30, keepalives_interval=10, keepalives_count=3)  # fmt: skip
        self._con.autocommit = True
        psycopg2.extras.register_default_json(self._con, loads=lambda text: text)
        psycopg2.extras.register_default_jsonb(self._con, loads=lambda text: text)
        self._cursor = self._con.cursor()

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, prefixed: bool = False
    ) -> PostgresConnection:
        """`sql` with the schemas' prefix applied (`physical`), unless `prefixed` says it is."""
        if not prefixed:
            sql = physical(sql)
        if params is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(_pyformat(sql), [_adapt(p) for p in params])
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:  # a statement without rows (psycopg2 would raise)
            return None
        return self._cursor.fetchone()  # type: ignore[no-any-return]

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return self._cursor.fetchall()  # type: ignore[no-any-return]

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        return self._cursor.fetchmany(size)  # type: ignore[no-any-return]

    def insert_rows(
        self,
        head: str,
        rows: Sequence[Sequence[Any]],
        types: Sequence[str],
        suffix: str,
        leading: Sequence[Any],
    ) -> None:
        """`head (values ...) as v(col0, col1, ...) suffix`, a page of rows per statement, each
        cell cast to its column's type (reverse_etl.state._insert: `head` may bind `leading`)."""
        from psycopg2.extras import execute_values

        head, suffix = physical(head), physical(suffix)
        start = (
            self._cursor.mogrify(_pyformat(head), [_adapt(v) for v in leading]).decode() if leading else head
        )
        names = ", ".join(f"col{n}" for n in range(len(types)))
        statement = start.replace("%", "%%") + f" (values %s) as v({names}) " + suffix.replace("%", "%%")
        template = "(" + ", ".join(f"%s::{kind}" for kind in types) + ")"
        execute_values(self._cursor, statement, [tuple(_adapt(c) for c in row) for row in rows],
                       template=template, page_size=1000)  # fmt: skip

    @property
    def description(self) -> Any:
        """(name, type, ...) per column, the type named as DuckDB names it (crmsync sql shows
        a JSON column as JSON by it)."""
        if self._cursor.description is None:
            return None
        return [(d.name, TYPE_NAMES.get(d.type_code, str(d.type_code))) for d in self._cursor.description]

    def interrupt(self) -> None:
        """Cancel the statement running now (crmsync sql's time limit), from another thread."""
        self._con.cancel()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> PostgresConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# PostgreSQL's type oids, by DuckDB's names
TYPE_NAMES = {16: "BOOLEAN", 20: "BIGINT", 21: "SMALLINT", 23: "INTEGER", 25: "VARCHAR", 114: "JSON",
              700: "FLOAT", 701: "DOUBLE", 1009: "VARCHAR[]", 1015: "VARCHAR[]", 1043: "VARCHAR",
              1082: "DATE", 1114: "TIMESTAMP", 1184: "TIMESTAMP WITH TIME ZONE", 1700: "DECIMAL",
              3802: "JSON"}  # fmt: skip


def _adapt(value: Any) -> Any:
    """A tuple goes in as an array, as a list does (psycopg2 makes a tuple a row)."""
    return list(value) if isinstance(value, tuple) else value


def is_postgres(con: Any) -> bool:
    return getattr(con, "dialect", "duckdb") == "postgres"


Connection = Any  # duckdb.DuckDBPyConnection or PostgresConnection


@contextmanager
def connect(db_path: Path | str, read_only: bool = False) -> Iterator[Connection]:
    """A short-lived connection to the warehouse: the DuckDB file at `db_path`, or the
    PostgreSQL database of CRMSYNC_WAREHOUSE (then `db_path` only names the local state's
    folder). While a DuckDB connection is open in this process, the next ones reuse its
    database instance instead of opening the file again."""
    warehouse = url()
    con: Any = (
        PostgresConnection(warehouse, read_only=read_only)
        if warehouse
        else duckdb.connect(str(db_path), read_only=read_only)
    )
    try:
        yield con
    finally:
        con.close()


def errors() -> tuple[type[BaseException], ...]:
    """What either engine raises for a statement or a connection that failed."""
    import psycopg2

    return (duckdb.Error, psycopg2.Error)


def copy_schemas(con: PostgresConnection, names: Sequence[str], from_prefix: str, into_prefix: str) -> None:
    """The tables of the schemas `names` (with `from_prefix`, a tenant's, or none) copied into
    schemas of the same names with `into_prefix`, from one snapshot (a writer's commit
    between two tables is in both or in neither), with their keys and defaults."""
    con.execute("begin isolation level repeatable read")
    try:
        for schema in (from_prefix + name for name in names):
            tables = con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = ? and table_type = 'BASE TABLE'",
                [schema],
            ).fetchall()
            if not tables:
                continue
            con.execute(f'create schema "{into_prefix}{schema}"')
            for (table,) in tables:
                target, source = f'"{into_prefix}{schema}"."{table}"', f'"{schema}"."{table}"'
                con.execute(f"create table {target} (like {source} including all)")
                con.execute(f"insert into {target} select * from {source}")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


# what a plan's (or the docs') scratch schemas start with: crmsync_plan_1a2b3c4d_... (no tenant's
# name may start with it: crmsync.tenants)
SCRATCH = "crmsync_"
_SCRATCH_PREFIX = re.compile(rf"^({SCRATCH}(?:plan|docs)_[0-9a-f]{{8}}_)")


def drop_stale_scratch(con: PostgresConnection) -> list[str]:
    """The scratch schemas of plans that ended without dropping them (killed hard): those whose
    advisory lock (taken by each plan for its whole run, on its prefix) nobody holds. Returns
    the prefixes dropped."""
    found = {
        matched.group(1)
        for (schema,) in con.execute("select nspname from pg_namespace").fetchall()
        if (matched := _SCRATCH_PREFIX.match(schema))
    }
    dropped = []
    for stale in sorted(found):
        key = [SCRATCH + stale]
        row = con.execute("select pg_try_advisory_lock(hashtext(?))", key).fetchone()
        if row and row[0]:
            try:
                drop_schemas(con, stale)
                dropped.append(stale)
            finally:
                con.execute("select pg_advisory_unlock(hashtext(?))", key)
    return dropped


def drop_schemas(con: PostgresConnection, with_prefix: str) -> None:
    """Every schema whose name starts with `with_prefix` (a plan's scratch copy), with all in it."""
    if not with_prefix:
        raise ValueError("no prefix: that would be every schema")
    for (schema,) in con.execute(
        "select nspname from pg_namespace where starts_with(nspname, ?)", [with_prefix]
    ).fetchall():
        con.execute(f'drop schema "{schema}" cascade')
