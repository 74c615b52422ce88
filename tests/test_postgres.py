"""The tests' throwaway PostgreSQL clusters (tests/postgres.py): one whose test process was
killed hard outlives it (pg_ctl's server is a daemon), and the next cluster started
stops and removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import REPO
from tests.postgres import cluster

HOLD = "from tests.postgres import cluster\nwith cluster() as url:\n    print(url, flush=True)\n    input()\n"


def test_a_cluster_left_by_a_killed_test_process_is_removed_by_the_next_one() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert holder.stdout is not None
    orphan = holder.stdout.readline().strip()
    assert orphan.startswith("postgresql://"), orphan
    folders = {p for p in Path("/tmp").glob("crmsync-pg-*") if (p / "owner").read_text() == str(holder.pid)}
    assert len(folders) == 1
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    psycopg2.connect(orphan).close()  # the server outlived its test process

    with cluster() as url:
        assert url != orphan
        psycopg2.connect(url).close()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(orphan, connect_timeout=5)
        assert not any(folder.exists() for folder in folders)
