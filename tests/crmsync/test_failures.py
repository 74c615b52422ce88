"""Every failure is one line on stderr naming what failed and what to do, a non-zero exit,
the JSON still printed with `--json`, and no run left open in sync_state.runs;
`--debug` shows the traceback. And one crmsync at a time per state file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from crmsync.lock import exclusive
from reverse_etl.state import ensure_state
from sandbox.bundle import Sandboxes


def _env(sandboxes: Sandboxes, db: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KEAP_API_URL": sandboxes.keap_url,
        "KEAP_API_KEY": sandboxes.keap.credentials.api_key,
        "CUSTOMCRM_API_URL": sandboxes.customcrm_url,
        "CUSTOMCRM_API_TOKEN": sandboxes.customcrm.credentials.token,
        "CRMSYNC_DB": str(db),
        **extra,
    }


def _crmsync(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmsync.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


# outside a terminal every line of a run starts with the time and the run id
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run=\d{8}T\d{6}Z-[0-9a-f]{6} ")


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return STAMP.sub("", lines[0], count=1)


def test_wrong_credentials_are_one_line_json_and_a_closed_run_and_debug_shows_the_traceback(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    db = tmp_path / "crmsync.duckdb"
    env = _env(sandboxes, db, KEAP_API_KEY="not-the-key")
    done = _crmsync(env, tmp_path, "sync", "--json")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert line.startswith("crmsync: keap refused the credentials (401); check the KEAP_* settings"), line
    answer = json.loads(done.stdout)
    assert answer["status"] == "failed" and answer["error"] == line.removeprefix("crmsync: ")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select status, summary->>'error' from sync_state.runs").fetchall() == [
            ("failed", answer["error"])
        ]

    debug = _crmsync(env, tmp_path, "--debug", "sync")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    last = STAMP.sub("", debug.stderr.strip().splitlines()[-1], count=1)
    assert last.startswith("crmsync: keap refused the credentials (401)")


def test_a_state_file_an_analyst_holds_open_is_one_line(sandboxes: Sandboxes, tmp_path: Path) -> None:
    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    with duckdb.connect(str(db), read_only=True):  # an analyst's session in another program
        done = _crmsync(_env(sandboxes, db), tmp_path, "sync", "--json")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert re.fullmatch(
        rf"crmsync: {re.escape(str(db))} is open in another program \(.+, pid {os.getpid()}\); DuckDB lets one "
        r"program at a time use it for writing: close that connection \(a DuckDB client, a notebook\) and "
        r"run crmsync again",
        line,
    ), line
    answer = json.loads(done.stdout)
    assert (answer["status"], answer["error"]) == ("failed", line.removeprefix("crmsync: "))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from sync_state.runs where status = 'running'").fetchall() == [
            (0,)
        ]


def test_sync_plan_and_extract_say_who_holds_the_state_file(sandboxes: Sandboxes, tmp_path: Path) -> None:
    db = tmp_path / "crmsync.duckdb"
    env = _env(sandboxes, db, CRMSYNC_WAIT_SECONDS="0.5")
    with exclusive(db, "sync"):  # a sync in progress, as another process would hold it
        refused = {
            command: _crmsync(env, tmp_path, command, "--quiet") for command in ("sync", "plan", "extract")
        }
    holder = rf"another crmsync \(pid {os.getpid()}, `sync`, started \d\d:\d\d:\d\dZ\) is using {re.escape(str(db))}"
    writer = rf"crmsync: {holder}; try again when it ends"
    reader = (
        rf"crmsync: {holder} and was still going after 0.5 s \(CRMSYNC_WAIT_SECONDS\); try again when it ends"
    )
    for command, done in refused.items():
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        pattern = reader if command == "plan" else writer  # plan only reads: it waited for the sync first
        assert re.fullmatch(pattern, _one_line(done.stderr)), (command, done.stderr)
    assert not db.exists()  # none of them opened the file
    assert _crmsync(env, tmp_path, "extract", "--quiet").returncode == 0  # free again once it ended


def test_read_only_commands_wait_for_a_sync_then_name_it_in_one_line(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    import threading
    import time

    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    readers = (["status"], ["runs"], ["rejections"], ["sql", "select 1"])
    with exclusive(db, "sync"):
        refused = [_crmsync(_env(sandboxes, db, CRMSYNC_WAIT_SECONDS="0.3"), tmp_path, *r) for r in readers]
    for done in refused:
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert re.fullmatch(
            rf"crmsync: another crmsync \(pid {os.getpid()}, `sync`, .+\) is using {re.escape(str(db))} and was "
            r"still going after 0.3 s \(CRMSYNC_WAIT_SECONDS\); try again when it ends",
            _one_line(done.stderr),
        ), done.stderr

    released = threading.Event()

    def hold_briefly() -> None:
        with exclusive(db, "sync"):
            released.wait(1.5)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    time.sleep(0.2)
    started = time.monotonic()
    waited = _crmsync(_env(sandboxes, db, CRMSYNC_WAIT_SECONDS="20"), tmp_path, "sql", "select 42 as n")
    holder.join()
    assert waited.returncode == 0 and waited.stdout == "n\n42\n", waited.stderr  # it waited, then read
    assert time.monotonic() - started >= 1.0


def test_a_build_past_duckdbs_memory_limit_names_the_setting_to_raise(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from crmsync.dbt import DbtError, build

    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    monkeypatch.setenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", "1MB")  # read by dbt_project/profiles.yml
    with pytest.raises(
        DbtError, match=r"ran out of its memory limit, 1MB: raise CRMSYNC_DUCKDB_MEMORY_LIMIT\)"
    ):
        build(db, tests=False)


def test_without_a_setting_duckdbs_memory_follows_the_accounts_size(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """1 KB per raw record, at least 1 GB; DuckDB's own default (None) when that reaches it;
    the operator's setting when there is one."""
    import duckdb

    from crmsync import dbt

    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    db = tmp_path / "crmsync.duckdb"
    assert dbt.memory_limit_for(db) == "1024MB"  # no file yet
    with duckdb.connect(str(db)) as con:
        con.execute("create schema raw_keap; create schema raw_customcrm")
        con.execute("create table raw_keap.contacts as select range as id from range(1400000)")
        con.execute("create table raw_customcrm.contacts as select range as id from range(600000)")
        con.execute(
            "create table raw_keap._dlt_loads as select range as id from range(9)"
        )  # dlt's, not records
    records, default_mb = dbt.account_size(db)
    assert records == 2_000_000 and default_mb is not None and default_mb > 1953
    assert dbt.memory_limit_for(db) == "1953MB"
    monkeypatch.setattr(dbt, "MEMORY_PER_RECORD_KB", 10**9)  # more than DuckDB's own default: that one
    assert dbt.memory_limit_for(db) is None
    monkeypatch.setattr(dbt, "MEMORY_PER_RECORD_KB", 1)
    assert dbt.memory_limit_for(db) == "1953MB"
    monkeypatch.setenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", "3GB")
    assert dbt.memory_limit_for(db) is None


def test_a_build_past_the_memory_the_size_suggested_runs_again_at_the_default(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The estimate is a first try, never a new way to fail: a build that runs out of it is
    run again with DuckDB's default, and says so."""
    import os

    from crmsync import dbt

    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(dbt, "memory_limit_for", lambda db_path: "1MB")  # far too little: the first try fails
    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    built = dbt.build(db)
    assert built.success
    assert built.note is not None and built.note.startswith("dbt build ran out of the 1MB"), built.note
    assert "CRMSYNC_DUCKDB_MEMORY_LIMIT" not in os.environ  # the first try's setting is gone
    monkeypatch.undo()  # the real estimate again: the account ran short at this size, so 80% from now on
    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    assert dbt.memory_limit_for(db) is None
    marker = dbt.target_dir(db) / dbt.RAN_SHORT
    assert marker.stat().st_mode & 0o077 == 0  # the state's files are the owner's
    marker.write_text('{"records": 1000000000}')  # ran short only at a much larger size
    assert dbt.memory_limit_for(db) == "1024MB"


def test_a_build_that_fails_for_another_reason_is_not_run_again(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, dbt_commands: list[list[str]]
) -> None:
    import pytest

    from crmsync import dbt

    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    with pytest.raises(dbt.DbtError, match="nope"):  # a per-mapping var naming no mapping stops the build
        dbt.build(db, {"conflict_policy": {"nope": "keap"}}, tests=False)
    assert len(dbt_commands) == 1
    assert not (dbt.target_dir(db) / dbt.RAN_SHORT).exists()


def test_a_failing_dbt_build_is_one_line_and_json_alone_on_stdout(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """dbt prints a failing node's errors on stdout even when quiet: none of it reaches the
    user; the run's own line names the node and the setting (a real 1MB memory limit)."""
    db = tmp_path / "crmsync.duckdb"
    done = _crmsync(_env(sandboxes, db, CRMSYNC_DUCKDB_MEMORY_LIMIT="1MB"), tmp_path, "sync", "--json")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert line.startswith("crmsync: dbt build failed (DuckDB ran out of its memory limit, 1MB"), line
    answer = json.loads(done.stdout)  # the document alone: no dbt line before it
    assert (answer["status"], answer["error"]) == ("failed", line.removeprefix("crmsync: "))


def test_plans_scratch_copy_knows_what_the_syncs_builds_ran_short_of(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`crmsync plan` builds in a copy of the file: it starts from the sync's remembered
    size, so it does not try a build twice where the sync no longer does."""
    from crmsync import dbt
    from crmsync.run import scratch_copy
    from crmsync.settings import Settings

    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    settings = Settings(db_path=tmp_path / "crmsync.duckdb", keap_configured=True, customcrm_configured=True)
    ensure_state(settings.db_path)
    with scratch_copy(settings) as scratch:
        assert not (dbt.target_dir(scratch.db_path) / dbt.RAN_SHORT).exists()
        assert dbt.memory_limit_for(scratch.db_path) == "1024MB"
    dbt.target_dir(settings.db_path).mkdir(parents=True)
    (dbt.target_dir(settings.db_path) / dbt.RAN_SHORT).write_text('{"records": 0, "limit": "1024MB"}')
    with scratch_copy(settings) as scratch:
        copied = dbt.target_dir(scratch.db_path) / dbt.RAN_SHORT
        assert copied.read_text() == '{"records": 0, "limit": "1024MB"}'
        assert copied.stat().st_mode & 0o077 == 0
        assert dbt.memory_limit_for(scratch.db_path) is None  # straight to DuckDB's default
