"""`crmsync docs` builds the site from a snapshot of the DuckDB file and serves it without
holding the state: while it serves, a sync can take the state file and write the DuckDB file,
and `status` reads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

from crmsync.lock import exclusive
from reverse_etl.state import ensure_state
from sandbox.runtime import free_port


def test_docs_serve_from_a_snapshot_and_hold_nothing_meanwhile(tmp_path: Path) -> None:
    db = tmp_path / "data" / "crmsync.duckdb"
    db.parent.mkdir(mode=0o700)
    ensure_state(db)
    db.chmod(0o600)
    env = {**os.environ, "CRMSYNC_DB": str(db), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "crmsync.cli", "docs", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, f"docs ended: {server.wait()} {server.stderr.read() if server.stderr else ''}"
            lines.append(line)
            if line.startswith("dbt docs at "):
                break
        url = lines[-1].removeprefix("dbt docs at ").split()[0]
        assert url == f"http://127.0.0.1:{port}/"
        assert "<html" in httpx.get(url + "index.html", timeout=30).text.lower()

        # while it serves: a sync's lock is free at once, the DuckDB file opens for writing
        with exclusive(db, "sync", wait_s=0), duckdb.connect(str(db)) as con:
            con.execute("insert into sync_state.runs (run_id, started_at, status) values ('r1', now(), 'ok')")
        status = subprocess.run([sys.executable, "-m", "crmsync.cli", "status"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert status.returncode == 0 and "last run: r1 ok" in status.stdout, status.stderr
        assert httpx.get(url + "manifest.json", timeout=30).status_code == 200  # still serving
        assert not list((db.parent / "crmsync.state").glob("docs-*"))  # the snapshot is gone
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
