"""The commands as a user runs them: `crmsync sync` with nothing configured uses the
bundled sandboxes with demo data (what `make sync` does on a fresh clone)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

KEYS = ("KEAP_API_URL", "KEAP_API_KEY", "KEAP_ACCESS_TOKEN", "KEAP_REFRESH_TOKEN", "CUSTOMCRM_API_URL",
        "CUSTOMCRM_API_TOKEN", "CRMSYNC_DB")  # fmt: skip


def crmsync(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    return subprocess.run([sys.executable, "-m", "crmsync.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def test_sync_plan_status_and_sql_on_the_bundled_sandboxes(tmp_path: Path) -> None:
    synced = crmsync(tmp_path, "sync")
    assert synced.returncode == 0, synced.stderr
    assert "sync summary" in synced.stdout and "Where to look next" in synced.stdout
    assert "bundled sandboxes" in synced.stderr
    assert (tmp_path / "data" / "crmsync.duckdb").exists() and (tmp_path / "data" / "sandbox").is_dir()

    planned = crmsync(tmp_path, "plan", "--json", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr  # nothing pending after a sync
    details = json.loads(planned.stdout)
    assert (details["pending"], details["rows"], details["conflicts"]) == ([], [], [])
    assert set(details["endpoints"]) == {"keap", "customcrm"}  # the endpoints it talked to, named

    status = json.loads(crmsync(tmp_path, "status", "--json").stdout)
    assert [m["linked"] for m in status["mappings"]] == [25, 25, 25, 25]
    assert status["last_run"]["status"] == "ok"

    rows = json.loads(crmsync(tmp_path, "sql", "select count(*) as n from link_contacts where link_status = 'linked'",
                              "--json").stdout)  # fmt: skip
    assert rows == [{"n": 25}]

    again = crmsync(tmp_path, "sync", "--json")
    result = json.loads(again.stdout)
    assert again.returncode == 0 and result["status"] == "ok"
    assert all(
        not any(v for k, v in counts.items() if k != "conflicts") for counts in result["mappings"].values()
    )


def test_half_a_configuration_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env["KEAP_API_KEY"] = "some-key"
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", "sync"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert (
        re.sub(r"^\S+ run=\S+ ", "", done.stderr.strip())
        == "crmsync: CUSTOMCRM_API_URL is not set; CUSTOMCRM_API_TOKEN is not set"
    )
    assert "some-key" not in done.stderr
