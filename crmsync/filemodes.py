"""Who may read the state: its owner only.

The DuckDB file and the state folder beside it (`<db>.state/`: dlt's working folder,
dbt's artifacts, the rotated OAuth tokens, the hooks' secret and spool) hold the customers' personal data and
credentials, so the folder is 0700 and the files in it and the DuckDB file 0600.

Two guards: the CLI sets the process umask to 077 before anything is created (dlt,
dbt and DuckDB then create their files private: the DuckDB file, its `.wal` and its
`.tmp/` spill folder beside it too), and `secure_state` creates the state folder 0700
and tightens what already exists with looser modes, with a warning naming it.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """From now on this process creates files 0600 and folders 0700."""
    os.umask(PRIVATE_UMASK)


def state_dir(db_path: Path) -> Path:
    """The state folder beside the DuckDB file (`crmsync.settings.Settings.state_dir`)."""
    return db_path.parent / (db_path.stem + ".state")


def _stderr(line: str) -> None:
    print(f"crmsync: {line}", file=sys.stderr)


def secure_state(db_path: Path, create: bool = True, warn: Callable[[str], None] = _stderr) -> list[Path]:
    """Create the state folder 0700 (with `create`) and take the group's and others' access
    away from the state folder, the DuckDB file, its WAL and spill folder and the token files
    wherever they have any, with one warning line each. Returns what was tightened."""
    db_path = Path(db_path)
    folder = state_dir(db_path)
    if create and not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    candidates = [
        folder,
        db_path,
        Path(f"{db_path}.wal"),
        Path(f"{db_path}.tmp"),  # DuckDB's spill folder
        folder / "keap_oauth.json",
        folder / "keap_oauth.json.lock",
        *(folder / name for name in ("hooks.secret", "hooks.json", "hooks.sqlite3", "hooks.sqlite3-wal")),
    ]
    tightened = []
    for path in candidates:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            path.chmod(mode & 0o700)
            kind = "folder" if path.is_dir() else "file"
            warn(
                f"warning: {path} was open to other users (mode {mode:04o}); the {kind} is now "
                f"{mode & 0o700:04o}, readable by its owner only"
            )
            tightened.append(path)
    return tightened
