"""`crmsync sql` output that pipes: header first and nothing before it, NULL distinct from an
empty text, lists as JSON, IDs never cut, --format csv|json, --limit; an analyst's mistake
(a typo, a write) is one line and exit 1; a reader that goes away (`| head`) is a clean exit 0.
And `crmsync --version`."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

LONG_ID = "con_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "crmsync.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            f"""create table t as select '{LONG_ID}' as id, null::varchar as n, '' as e, ['a', 'b'] as l,
                       range::integer as k, 'row ' || range::varchar as note from range(3)"""
        )
    db.chmod(0o600)
    return {**os.environ, "CRMSYNC_DB": str(db), "COLUMNS": "80"}


def _sql(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmsync.cli", "sql", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_piped_output_is_header_first_tab_separated_with_null_distinct(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = _sql(env, tmp_path, "select * from t order by k")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "id\tn\te\tl\tk\tnote"  # no "3 rows" before the header: `> file.tsv` works
    assert lines[1] == f'{LONG_ID}\t\\N\t\t["a", "b"]\t0\trow 0'  # NULL is \N, '' is empty, a list is JSON
    assert len(lines) == 4


def test_csv_json_and_limit(env: dict[str, str], tmp_path: Path) -> None:
    csv = _sql(env, tmp_path, "select * from t order by k", "--format", "csv", "--limit", "2")
    assert csv.returncode == 0
    assert csv.stdout.splitlines() == [
        "id,n,e,l,k,note",
        f'{LONG_ID},,"","[""a"", ""b""]",0,row 0',
        f'{LONG_ID},,"","[""a"", ""b""]",1,row 1',
    ]
    assert csv.stderr.strip() == "crmsync: stopped after 2 rows (--limit)"  # said on stderr, not in the data
    rows = json.loads(_sql(env, tmp_path, "select n, e, l, k from t order by k", "--format", "json").stdout)
    assert rows[0] == {"n": None, "e": "", "l": ["a", "b"], "k": 0}


def test_a_table_on_a_terminal_keeps_ids_whole_and_shows_null(env: dict[str, str], tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "crmsync.cli", "sql", "select id, n, e, note from t order by k"],
                               cwd=tmp_path, env={**env, "TERM": "dumb"}, stdin=follower, stdout=follower,
                               stderr=follower, close_fds=True)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=60) == 0
    os.close(leader)
    shown = b"".join(chunks).decode()
    lines = [line for line in shown.splitlines() if line.strip()]
    assert (
        sum(LONG_ID in line for line in lines) == 3
    )  # every ID whole, on one line, on an 80-column terminal
    assert "∅" in shown  # NULL shown distinctly
    header = next(i for i, line in enumerate(lines) if "note" in line)
    count = next(i for i, line in enumerate(lines) if "3 rows" in line)
    assert header < count  # the count comes after the table, never before the header


def test_a_typo_and_a_write_are_one_line_and_exit_1(env: dict[str, str], tmp_path: Path) -> None:
    typo = _sql(env, tmp_path, "selec 1")
    assert typo.returncode == 1 and typo.stdout == ""
    assert typo.stderr.splitlines() == [typo.stderr.strip()]
    assert typo.stderr.startswith('crmsync: query failed: Parser Error: syntax error at or near "selec"')
    write = _sql(env, tmp_path, "delete from t")
    assert write.returncode == 1 and len(write.stderr.strip().splitlines()) == 1
    assert write.stderr.startswith("crmsync: query refused: crmsync sql only reads")
    debug = subprocess.run([sys.executable, "-m", "crmsync.cli", "--debug", "sql", "selec 1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_a_closed_pipe_ends_quietly_with_exit_0(env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"{sys.executable} -m crmsync.cli sql 'select * from range(300000)' | head -2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.stdout.splitlines() == ["range", "0"]
    assert done.stderr == "" and done.returncode == 0


def test_version(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("crmsync ") and done.stdout.strip() != "crmsync"
