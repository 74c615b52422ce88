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


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


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
    assert debug.stderr.strip().splitlines()[-1].startswith("crmsync: keap refused the credentials (401)")


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
    env = _env(sandboxes, db)
    with exclusive(db, "sync"):  # a sync in progress, as another process would hold it
        refused = {
            command: _crmsync(env, tmp_path, command, "--quiet") for command in ("sync", "plan", "extract")
        }
    pattern = (
        rf"crmsync: another crmsync \(pid {os.getpid()}, `sync`, started \d\d:\d\d:\d\dZ\) is using "
        rf"{re.escape(str(db))}; try again when it ends"
    )
    for command, done in refused.items():
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert re.fullmatch(pattern, _one_line(done.stderr)), (command, done.stderr)
    assert not db.exists()  # none of them opened the file
    assert _crmsync(env, tmp_path, "extract", "--quiet").returncode == 0  # free again once it ended
