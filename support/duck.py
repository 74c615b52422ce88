"""Short DuckDB connections: a DuckDB file takes one writing process at a time, so every
step opens the file, does its work and closes it again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


@contextmanager
def connect(db_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection (while one is open in this process, the next ones reuse
    its database instance instead of opening the file again)."""
    con = duckdb.connect(str(db_path))
    try:
        yield con
    finally:
        con.close()
