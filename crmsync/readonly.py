"""`crmsync sql`: a query on a connection that can read the DuckDB file and nothing else.

`read_only` alone protects only the DuckDB file: `COPY ... TO` would still write any
file, `read_text` read any file the process can (the OAuth tokens beside the state),
`ATTACH`, `INSTALL` and `LOAD` reach further. The connection therefore has

- no external access (`enable_external_access=false`): no file or URL is read or
  written but the DuckDB file itself; no extension is installed or loaded beyond the
  ones built into DuckDB (json among them);
- no spilling to disk (`temp_directory=''`), so nothing is written beside the file;
- its configuration locked (`lock_configuration=true`): `SET`, `RESET` and
  `PRAGMA` settings cannot lift any of this;
- a memory limit and few threads, and a time limit enforced from a timer thread with
  `interrupt()`.

Analysts who need more open the file themselves, with a sync not running (README).

On a PostgreSQL warehouse (CRMSYNC_WAREHOUSE) the query runs alone (one statement: none
can end the transaction and start another) in a read-only transaction, rolled back at
the end, with the same time limit (the statement cancelled); the memory is the server's.
With `--limit`, through a cursor on the server: no row past the limit is computed or sent.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from crmsync.lock import DEFAULT_WAIT_S, shared
from support import warehouse

if TYPE_CHECKING:
    import duckdb

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_LIMIT = "1GB"
THREADS = 2

LOCKED_DOWN: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "temp_directory": "",
    "lock_configuration": True,  # last: nothing after it can be changed
}

MORE = "open the DuckDB file (or the PostgreSQL warehouse) yourself for more (README: For analysts)"


class QueryError(Exception):
    """A query on the state was refused or failed; the message is one line saying which and why."""


def first_line(error: BaseException) -> str:
    """DuckDB's messages run over several lines (the query, a caret): the first says it."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def require(db_path: Path) -> None:
    if warehouse.url() is None and not Path(db_path).exists():
        raise QueryError(f"{db_path} does not exist yet: run `make sync` first")


def connect(
    db_path: Path,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    wait_s: float = 0.0,
    search_path: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """The locked-down, read-only connection; another program that holds the file for writing
    is waited for up to `wait_s` seconds, then named."""
    import duckdb

    require(db_path)
    url = warehouse.url()
    if url is not None:
        try:
            con = warehouse.PostgresConnection(url, read_only=True)
        except warehouse.errors() as exc:
            raise QueryError(f"cannot reach the PostgreSQL warehouse: {first_line(exc)}") from None
        con.execute("begin transaction read only")  # rolled back when the connection closes
        con.execute("select 1")  # a query: the transaction can no longer be made read-write
        # the marts by their names, as on DuckDB (a tenant's own; all_tenants: the views across them)
        con.execute(f'set local search_path = "{search_path or warehouse.prefix() + "main"}"')
        return con  # type: ignore[return-value]
    config = {"memory_limit": memory_limit, "threads": THREADS, **LOCKED_DOWN}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=True, config=config)
        except duckdb.Error as exc:
            text = first_line(exc)
            if "lock" not in text.lower():
                raise QueryError(f"cannot open {db_path} read-only: {text}") from None
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            holder = re.search(r"held in (.+?) \(PID (\d+)\)", str(exc))
            who = f" ({holder.group(1)}, pid {holder.group(2)})" if holder else ""
            raise QueryError(
                f"{db_path} is open for writing in another program{who}; DuckDB lets no one read it "
                "meanwhile: try again when it is closed"
            ) from None


@contextmanager
def reading(
    db_path: Path,
    wait_s: float = DEFAULT_WAIT_S,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    search_path: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection while no crmsync writes the state (crmsync.lock.shared): a running
    sync is waited for up to `wait_s` seconds, then named in one line (StateBusy)."""
    require(db_path)
    with shared(db_path, wait_s):
        con = connect(db_path, memory_limit, wait_s, search_path)
        try:
            yield con
        finally:
            con.close()


@contextmanager
def reading_tenants(
    states: dict[str, Path], wait_s: float = DEFAULT_WAIT_S, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """One connection over several tenants' DuckDB files (`crmsync sql --all-tenants`): each
    attached read-only as a catalog named after its tenant (`"acme".main.link_contacts`),
    and for each table of their marts (`main`) a view across all of them, the tenant's name
    first (`link_contacts`: tenant, then the table's columns, by name). Each file is held
    as `reading` holds one; the connection is in memory, locked down as `connect`'s once
    the files are attached: nothing but those files is read. DuckDB lets a connection
    detach a file and attach it again writable (a path once attached stays allowed), so
    run_query runs nothing but SELECT on it (ONLY_READING)."""
    import duckdb

    from crmsync.lock import shared

    config = {"memory_limit": memory_limit, "threads": THREADS,
              **{k: v for k, v in LOCKED_DOWN.items() if k not in ("enable_external_access", "lock_configuration")}}  # fmt: skip
    with ExitStack() as held:
        for path in states.values():
            require(path)
            held.enter_context(shared(path, wait_s))
        con = duckdb.connect(":memory:", config=config)
        held.callback(con.close)
        tables: dict[str, list[str]] = {}
        for name, path in states.items():
            try:
                con.execute(f"attach {_literal(str(path))} as {_name(name)} (read_only)")
            except duckdb.Error as exc:
                raise QueryError(
                    f"cannot open {path} (tenant {name!r}) read-only: {first_line(exc)}"
                ) from None
            for (table,) in con.execute(
                "select table_name from duckdb_tables() where database_name = ? and schema_name = 'main' "
                "union all select view_name from duckdb_views() where database_name = ? and schema_name = 'main'",
                [name, name],
            ).fetchall():
                tables.setdefault(table, []).append(name)
        for table, names in sorted(tables.items()):
            parts = [f"select {_literal(n)} as tenant, * from {_name(n)}.main.{_name(table)}" for n in names]
            con.execute(f"create temp view {_name(table)} as " + " union all by name ".join(parts))
        con.execute("set enable_external_access = false")  # from here on, no file but the attached ones
        con.execute("set lock_configuration = true")
        yield con


# the statements `crmsync sql --all-tenants` runs (duckdb.StatementType's names): not even
# EXPLAIN, whose ANALYZE runs the statement it explains
ONLY_READING = frozenset({"SELECT"})


def refuse_unless_reading(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """QueryError unless every statement of `query` is a SELECT (DESCRIBE, SHOW and
    SUMMARIZE are SELECTs to DuckDB)."""
    import duckdb

    try:
        kinds = [statement.type.name for statement in con.extract_statements(query)]
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {first_line(exc)}") from None
    refused = sorted({kind for kind in kinds if kind not in ONLY_READING})
    if refused:
        raise QueryError(
            f"query refused: crmsync sql --all-tenants runs SELECT only (not {', '.join(refused)}); {MORE}"
        )


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]  # DuckDB's type names: VARCHAR, BIGINT, JSON, VARCHAR[], ...
    rows: list[tuple[Any, ...]]
    more: bool = False  # rows past the limit were left out


def run_query(
    db_path: Path,
    query: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    limit: int | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    tenants: dict[str, Path] | None = None,
    search_path: str | None = None,
) -> QueryResult:
    """The columns, types and rows of `query` (the first `limit` rows), or a QueryError with
    one line. A running sync is waited for up to `wait_s` seconds (StateBusy after). With
    `tenants` (their names and DuckDB files), on all of them at once (reading_tenants). On
    PostgreSQL, `search_path`: the schema the query's names are looked up in (all_tenants)."""

    opened = (
        reading(db_path, wait_s, memory_limit, search_path)
        if tenants is None
        else reading_tenants(tenants, wait_s, memory_limit)
    )
    with opened as con:
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            con.interrupt()

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
        cursor: Any  # DuckDB's connection, or the warehouse's PostgresConnection
        try:
            if tenants is not None:
                refuse_unless_reading(con, query)
                cursor = con.execute(query)
            elif warehouse.is_postgres(con):
                # a tenant's schema names prefixed, not its literals (warehouse.physical_query)
                postgres = cast(warehouse.PostgresConnection, con)
                query = warehouse.physical_query(reading_statement(query))
                con.execute(f"set local statement_timeout = {int(timeout * 1000)}")
                if limit is not None and first_word(query) != "show":  # SHOW cannot be a cursor's
                    # through a cursor on the server: rows past the limit are never computed nor
                    # sent (a plain execute would bring the whole result into this process first)
                    postgres.execute(f"declare crmsync_sql no scroll cursor for {query}", prefixed=True)
                    query = f"fetch forward {limit + 1} from crmsync_sql"
                cursor = postgres.execute(query, prefixed=True)
            else:
                cursor = con.execute(query)
            columns = [d[0] for d in cursor.description or []]
            types = [str(d[1]) for d in cursor.description or []]
            rows = cursor.fetchall() if limit is None else cursor.fetchmany(limit + 1)
        except warehouse.errors() as exc:
            raise _explain(exc, timed_out.is_set(), timeout, memory_limit) from None
        finally:
            timer.cancel()
    more = limit is not None and len(rows) > limit
    return QueryResult(columns, types, rows[:limit] if more else rows, more)


# what a query on PostgreSQL may start with: statements that only read
READING_WORDS = ("select", "with", "values", "table", "show")


def first_word(query: str) -> str:
    """The statement's first word, lower-cased, past any comments ('' when there is none)."""
    words = re.sub(r"--[^\r\n]*|/\*.*?\*/", " ", query, flags=re.S).split()
    return words[0].lower() if words else ""


def reading_statement(query: str) -> str:
    """`query` if it is one statement that only reads, without its trailing semicolons; else a
    QueryError. PostgreSQL separates statements by `;` alone, so a query with no `;` but
    trailing ones is one statement whatever its quotes, comments or line ends; and a
    statement that begins with one of READING_WORDS reads (in the read-only transaction
    it runs in, and with its first query already run, it cannot turn read-write). A `;`
    inside a text literal is refused too: a rare price for a rule with no parser."""
    text = query.strip().rstrip(";").rstrip()
    if ";" in text:
        raise QueryError(
            "query refused: crmsync sql runs one statement on PostgreSQL, and no ';' inside it "
            f"(not even in a quoted text); {MORE}"
        )
    if first_word(text) not in READING_WORDS:
        raise QueryError(
            f"query refused: crmsync sql only reads (a statement that starts with "
            f"{', '.join(w.upper() for w in READING_WORDS)}); {MORE}"
        )
    return text


def _explain(exc: BaseException, timed_out: bool, timeout: float, memory_limit: str) -> QueryError:
    import duckdb
    import psycopg2.errors

    text = first_line(exc)
    if isinstance(exc, psycopg2.Error):
        if timed_out or isinstance(exc, psycopg2.errors.QueryCanceled):
            return QueryError(
                f"query stopped after {timeout:g} s (--timeout): make it cheaper, or give it longer"
            )
        if isinstance(exc, psycopg2.errors.ReadOnlySqlTransaction):
            return QueryError(f"query refused: crmsync sql only reads; {MORE} ({text})")
        return QueryError(f"query failed: {text}")
    if timed_out or isinstance(exc, duckdb.InterruptException):
        return QueryError(
            f"query stopped after {timeout:g} s (--timeout): make it cheaper, or give it longer"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryError(f"query needs more than {memory_limit} of memory (--memory-limit): {text}")
    if isinstance(exc, duckdb.PermissionException) or "disabled through configuration" in text:
        return QueryError(f"query refused: crmsync sql reads the DuckDB file only, no other file, URL or extension; {MORE} ({text})")  # fmt: skip
    if "configuration has been locked" in text:
        return QueryError(f"query refused: crmsync sql cannot change DuckDB's settings; {MORE} ({text})")
    if "read-only mode" in text:
        return QueryError(f"query refused: crmsync sql only reads; {MORE} ({text})")
    return QueryError(f"query failed: {text}")
