"""`crmsync sql` reads the DuckDB file and nothing else: every way out is refused with one
line and exit 1, and what analysts need (tables, JSON) still works."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from crmsync.cli import main
from crmsync.readonly import QueryError, run_query
from support.warehouse import ENV

SECRET = "refresh-token-that-must-stay-in-its-file"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DuckDB file with a table and the OAuth token file beside it, as after a sync."""
    db = tmp_path / "data" / "crmsync.duckdb"
    db.parent.mkdir()
    with duckdb.connect(str(db)) as con:
        con.execute("create schema raw_keap")
        con.execute(
            """create table raw_keap.contacts as select '1' as id, '{"email": "ada@example.com"}' as payload"""
        )
    tokens = db.parent / "crmsync.state" / "keap_oauth.json"
    tokens.parent.mkdir()
    tokens.write_text(json.dumps({"refresh_token": SECRET}))
    for path, mode in ((db, 0o600), (tokens.parent, 0o700), (tokens, 0o600)):
        path.chmod(mode)  # as crmsync leaves them (looser ones would be warned about)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMSYNC_DB", str(db))
    umask = os.umask(0o022)  # the CLI sets a private umask for its process: give pytest's back
    os.umask(umask)
    try:
        yield db
    finally:
        os.umask(umask)


def sql(*args: str) -> Result:
    return CliRunner().invoke(main, ["sql", *args])


def test_queries_and_json_work(state: Path) -> None:
    done = sql("select payload->>'$.email' as email, now() > '2020-01-01'::timestamptz as later from raw_keap.contacts",
               "--json")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == [{"email": "ada@example.com", "later": True}]


def _refused(done: Result, reason: str) -> str:
    assert done.exit_code == 1
    assert done.stdout == ""
    line = done.stderr
    assert line.count("\n") == 1 and line.startswith("crmsync: query refused: ")  # one line, no traceback
    assert reason in line
    return line


@pytest.mark.parametrize(
    "query",
    [
        "copy (select 42) to '{outside}/x.csv'",
        "copy raw_keap.contacts to '{outside}/x.parquet' (format parquet)",
        "export database '{outside}/export'",
        "attach '{outside}/other.duckdb' as other",
        "select * from read_text('{tokens}')",
        "select * from read_blob('{tokens}')",
        "select * from read_csv('{tokens}')",
        "select * from read_json('{tokens}')",
        "select * from glob('{state_dir}/*')",
        "select * from read_text('/etc/hostname')",
        "select * from read_parquet('https://example.com/x.parquet')",
        "install httpfs",
        "load httpfs",
        "create secret (type s3, key_id 'a', secret 'b')",
    ],
)
def test_no_file_url_or_extension_is_reachable(state: Path, tmp_path: Path, query: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tokens = state.parent / "crmsync.state" / "keap_oauth.json"
    done = sql(query.format(outside=outside, tokens=tokens, state_dir=tokens.parent))
    line = _refused(done, "crmsync sql reads the DuckDB file only, no other file, URL or extension")
    assert SECRET not in done.output
    assert "README: For analysts" in line
    assert list(outside.iterdir()) == []  # nothing was written


@pytest.mark.parametrize(
    "query",
    [
        "set enable_external_access = true",
        "set memory_limit = '64GB'",
        "reset threads",
        "pragma enable_profiling",
        "call enable_logging()",
        "set lock_configuration = false",
    ],
)
def test_settings_cannot_be_changed(state: Path, query: str) -> None:
    _refused(sql(query), "crmsync sql cannot change DuckDB's settings")


@pytest.mark.parametrize(
    "query",
    [
        "create table raw_keap.x as select 1",
        "insert into raw_keap.contacts values ('2', '{}')",
        "update raw_keap.contacts set payload = '{}'",
        "delete from raw_keap.contacts",
        "drop table raw_keap.contacts",
        "create view v as select 1",
        "attach ':memory:' as scratch",
    ],
)
def test_nothing_is_written(state: Path, query: str) -> None:
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    done = sql(query)
    assert done.exit_code == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        ("crmsync: query refused: crmsync sql only reads", "crmsync: query failed: ")
    )
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before


def test_a_long_query_is_stopped_at_the_timeout(state: Path) -> None:
    done = sql("select count(*) from range(1000000000000) t(i) where i % 7 = 3", "--timeout", "0.5")
    assert done.exit_code == 1
    assert (
        done.stderr == "crmsync: query stopped after 0.5 s (--timeout): make it cheaper, or give it longer\n"
    )


def test_a_query_past_the_memory_limit_is_stopped(state: Path) -> None:
    done = sql("select count(distinct i::varchar || repeat('x', 40)) from range(20000000) t(i)",
               "--memory-limit", "30MB")  # fmt: skip
    assert done.exit_code == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        "crmsync: query needs more than 30MB of memory (--memory-limit): Out of Memory"
    )


def test_sql_errors_are_one_line_too(state: Path) -> None:
    done = sql("selec 1")
    assert done.exit_code == 1
    assert done.stderr == 'crmsync: query failed: Parser Error: syntax error at or near "selec"\n'


def test_the_command_as_users_run_it(state: Path, tmp_path: Path) -> None:
    """A real process: one line on stderr, exit 1, no file written."""
    target = tmp_path / "stolen.csv"
    done = subprocess.run(
        [sys.executable, "-m", "crmsync.cli", "sql",
         f"copy (select * from read_text('{state.parent / 'crmsync.state' / 'keap_oauth.json'}')) to '{target}'"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "CRMSYNC_DB": str(state)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("crmsync: query refused: ")
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert not target.exists()


@pytest.mark.parametrize(
    "query",
    [
        "set transaction read write; --\rdelete from main.link_contacts; --\rcommit",  # \r ends a comment
        "commit; begin read write; delete from sync_state.runs",
        "select 1; delete from sync_state.runs",
        "select 'a;b'",  # a ';' in a text too: no parser to tell them apart
        "delete from sync_state.runs",
        "copy (select 1) to program 'id'",
        "/* select */ update sync_state.runs set status = 'x'",
        "-- select\rinsert into sync_state.runs values (1)",
        "",
    ],
)
def test_on_postgresql_only_one_reading_statement_runs(query: str) -> None:
    from crmsync.readonly import QueryError, reading_statement

    with pytest.raises(QueryError, match="query refused"):
        reading_statement(query)


def test_on_postgresql_a_reading_statement_runs_as_written() -> None:
    from crmsync.readonly import reading_statement

    assert reading_statement("select 1;;  ") == "select 1"
    assert reading_statement("-- the links\nWITH l AS (SELECT 1) SELECT * FROM l") == (
        "-- the links\nWITH l AS (SELECT 1) SELECT * FROM l"
    )
    assert reading_statement("/* a */ values (1), (2)") == "/* a */ values (1), (2)"


def test_on_postgresql_a_limited_query_computes_no_row_past_the_limit(
    warehouse: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through a cursor on the server: the division by zero waits in row 11, which a plain
    execute (the whole result brought into this process) would reach."""
    monkeypatch.setenv(ENV, warehouse)
    query = "select g from generate_series(1, 100) as g where 1 / (case when g > 10 then 0 else 1 end) = 1"
    found = run_query(tmp_path / "unused.duckdb", query, limit=3)
    assert (found.columns, found.rows, found.more) == (["g"], [(1,), (2,), (3,)], True)
    assert run_query(tmp_path / "unused.duckdb", query, limit=9).rows[-1] == (9,)  # asks for the 10th
    with pytest.raises(QueryError, match="division by zero"):
        run_query(tmp_path / "unused.duckdb", query, limit=10)  # its 11th row is reached
    assert run_query(tmp_path / "unused.duckdb", "values (1), (2)", limit=5).more is False
    with pytest.raises(QueryError, match="division by zero"):
        run_query(tmp_path / "unused.duckdb", query)  # no limit: every row, as asked
    assert run_query(tmp_path / "unused.duckdb", "show timezone", limit=1).rows == [("UTC",)]
    assert run_query(tmp_path / "unused.duckdb", "/* which */ -- zone\nSHOW timezone", limit=1).rows == [
        ("UTC",)
    ]
