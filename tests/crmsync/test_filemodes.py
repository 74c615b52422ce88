"""The state is its owner's only: the folder 0700, the DuckDB file and the tokens 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync.filemodes import secure_state
from reverse_etl.state import ensure_state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Files created as a default umask creates them: readable by everyone."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_a_new_state_is_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "data" / "crmsync.duckdb"
    warned: list[str] = []
    assert secure_state(db, warn=warned.append) == []
    ensure_state(db)
    assert mode(tmp_path / "data" / "crmsync.state") == 0o700
    assert mode(db) == 0o600
    assert warned == []  # nothing existed: nothing to warn about


def test_existing_loose_modes_are_tightened_with_a_warning_each(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    folder = tmp_path / "crmsync.state"
    folder.mkdir()
    tokens = folder / "keap_oauth.json"
    tokens.write_text("{}")
    for path, loose in ((db, 0o644), (folder, 0o755), (tokens, 0o640)):
        path.chmod(loose)
    warned: list[str] = []
    assert secure_state(db, warn=warned.append) == [folder, db, tokens]
    assert (mode(folder), mode(db), mode(tokens)) == (0o700, 0o600, 0o600)
    assert warned == [
        f"warning: {folder} was open to other users (mode 0755); the folder is now 0700, readable by its owner only",
        f"warning: {db} was open to other users (mode 0644); the file is now 0600, readable by its owner only",
        f"warning: {tokens} was open to other users (mode 0640); the file is now 0600, readable by its owner only",
    ]
    assert secure_state(db, warn=warned.append) == [] and len(warned) == 3


def test_any_command_tightens_an_existing_state_and_says_so(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "crmsync.duckdb"
    ensure_state(db)
    db.chmod(0o644)
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "status", "--json"], cwd=tmp_path,
                          env={**os.environ, "CRMSYNC_DB": str(db)}, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        f"crmsync: warning: {db} was open to other users (mode 0644); the file is now 0600, readable by its owner only\n"
    )
    assert mode(db) == 0o600
