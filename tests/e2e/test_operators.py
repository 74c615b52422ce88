"""What an operator sees (issue 14): the README's cron recipe leaves a log stamped with the time
and the run id, `crmsync runs` shows the history (a killed run as interrupted), `plan` shows the
rows it would write with old -> new values and exits 2 with --detailed-exitcode, and a refused
row can be listed, set aside and retried; a run whose only work is a known refused row is quiet
and does not rebuild."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import World

CRMSYNC = Path(sys.executable).parent / "crmsync"  # what `make sync` installs: .venv/bin/crmsync
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run=(\d{8}T\d{6}Z-[0-9a-f]{6}) ")


def _cli(world: World, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CRMSYNC), *args], cwd=cwd, env=world.env(**env), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def _recipe(world: World, cwd: Path, log: Path) -> tuple[int, list[str]]:
    """The README's cron line, run once: the exit code and the lines it added to the log."""
    before = log.read_text().splitlines() if log.exists() else []
    done = subprocess.run(["bash", "-c", f"{CRMSYNC} sync --quiet >> {log} 2>&1"], cwd=cwd, env=world.env(),
                          timeout=600, check=False)  # fmt: skip
    return done.returncode, log.read_text().splitlines()[len(before) :]


def _run_ids(lines: list[str]) -> set[str]:
    ids = set()
    for line in lines:
        stamp = STAMP.match(line)
        assert stamp, f"not stamped: {line!r}"
        ids.add(stamp.group(1))
    return ids


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stderr.strip() == "" or done.returncode in (0, 2), done.stderr
    return json.loads(done.stdout)


@pytest.mark.synced
@pytest.mark.timeout(600)
def test_cron_log_run_history_plan_rows_and_a_killed_run(world: World, tmp_path: Path) -> None:
    linked = {r[0] for r in world.sql("select customcrm_id from sync_state.links where mapping = 'contacts'")}
    contact = next(c for c in world.crm_all("contacts") if c["Id"] in linked and c["Email"])
    keap_id = world.sql(f"select keap_id from sync_state.links where customcrm_id = '{contact['Id']}'")[0][0]
    twin = world.keap.post(  # Customcrm refuses it: the address is already used (409)
        "/contacts",
        json={"given_name": "Twin", "email_addresses": [{"email": contact["Email"], "field": "EMAIL1"}]},
    ).json()
    world.crm.patch(f"/contacts/{contact['Id']}", json={"Title": "from Customcrm"})  # a Keap update is due

    # plan: the rows, old -> new, the endpoints; exit 2 with --detailed-exitcode (--json: tests/crmsync)
    shown = _cli(world, tmp_path, "plan", "--detailed-exitcode", "--mapping", "contacts")
    assert shown.returncode == 2, shown.stderr
    assert f"endpoints: keap {world.boxes.keap_url}, customcrm {world.boxes.customcrm_url}" in shown.stdout
    assert "contacts: customcrm -> keap (1 update)" in shown.stdout
    (update,) = [line for line in shown.stdout.splitlines() if line.startswith(f"  update keap {keap_id} ")]
    assert f"customcrm {contact['Id']}: job_title " in update and update.endswith(" -> 'from Customcrm'")
    assert f"  create keap {twin['id']}: FirstName ∅ -> 'Twin'" in shown.stdout
    assert "customers:" not in shown.stdout  # --mapping

    # the cron recipe: every line stamped with the time and the run id, the refusal and the outcome
    log = tmp_path / "crmsync.log"
    code, first = _recipe(world, tmp_path, log)
    assert code == 3
    (first_id,) = _run_ids(first)
    refused = [line for line in first if "rejected by customcrm" in line]
    assert len(refused) == 1 and f"[key contacts/customcrm/{twin['id']}]" in refused[0]
    assert "None" not in refused[0] and refused[0].count("already used") == 1  # the reason once, no None
    assert re.search(rf"run {first_id} rejected \(exit 3\) in \d+\.\d s: ", first[-1])
    assert "contacts: " in first[-1] and "1 rejected" in first[-1]
    assert "\x1b[" not in log.read_text()  # no colour codes (dbt's included) in a log

    # the same refused row again: no work, exit 0, one line; the run after skips dbt
    code, second = _recipe(world, tmp_path, log)
    (second_id,) = _run_ids(second)
    assert code == 0 and len(second) == 1, second
    assert "1 refused before and set aside" in second[0]
    code, third = _recipe(world, tmp_path, log)
    assert code == 0 and f"nothing changed since run {second_id}" in third[-1]

    # run history, newest first; a run that died is shown as interrupted
    history = _json(_cli(world, tmp_path, "runs", "--json"))
    assert [(r["status"], r["exit_code"]) for r in history] == [
        ("ok", 0),
        ("ok", 0),
        ("rejected", 3),
        ("ok", 0),
    ]
    assert history[1]["run_id"] == second_id and history[2]["run_id"] == first_id
    assert history[0]["quiet_since"] == second_id and all(r["seconds"] is not None for r in history)
    assert history[2]["mappings"]["contacts"]["rejected"] == 1
    world.sql("insert into sync_state.runs (run_id, started_at, status) values ('killed', now(), 'running')")
    shown = _cli(world, tmp_path, "runs")
    assert shown.returncode == 0 and shown.stdout.splitlines()[0].split("\t")[:5] == [
        "run", "started", "seconds", "outcome", "exit",
    ]  # fmt: skip
    assert (
        shown.stdout.splitlines()[1].startswith("killed\t") and "interrupted" in shown.stdout.splitlines()[1]
    )

    code, fourth = _recipe(world, tmp_path, log)  # the next sync closes the killed run's row, naming itself
    assert world.sql("select status, summary->>'closed_by' from sync_state.runs where run_id = 'killed'") == [
        ("interrupted", _run_ids(fourth).pop())
    ]


@pytest.mark.synced
@pytest.mark.timeout(600)
def test_a_refused_row_is_listed_set_aside_by_a_person_and_retried(world: World, tmp_path: Path) -> None:
    linked = {r[0] for r in world.sql("select customcrm_id from sync_state.links where mapping = 'contacts'")}
    taken = next(c["Email"] for c in world.crm_all("contacts") if c["Id"] in linked and c["Email"])
    twin = world.keap.post(
        "/contacts", json={"given_name": "Twin", "email_addresses": [{"email": taken, "field": "EMAIL1"}]}
    ).json()
    assert world.sync().status == "rejected"

    # rejections: listed, set aside with who and why, then retried now
    key = f"contacts/customcrm/{twin['id']}"
    (listed,) = _json(_cli(world, tmp_path, "rejections", "--json"))
    assert (listed["key"], listed["state"], listed["attempts"]) == (key, "open", 1)
    ignored = _cli(world, tmp_path, "rejections", "ignore", key, "--reason", "a duplicate: merging by hand",
                   USER="ops-anna")  # fmt: skip
    assert ignored.returncode == 0, ignored.stderr
    (listed,) = _json(_cli(world, tmp_path, "rejections", "--json"))
    assert (listed["state"], listed["ignored_by"], listed["ignore_reason"]) == (
        "ignored", "ops-anna", "a duplicate: merging by hand",
    )  # fmt: skip
    contacts = next(
        m for m in _json(_cli(world, tmp_path, "status", "--json"))["mappings"] if m["mapping"] == "contacts"
    )
    assert (contacts["rejected"], contacts["ignored"]) == (0, 1)
    world.sql(
        "update sync_state.rejections set retry_after = now() - interval '1 hour'"
    )  # due, but set aside
    aside = world.sync()
    assert aside.status == "ok" and [r["keap_id"] for r in aside.push.set_aside] == [twin["id"]]
    assert aside.push.set_aside[0]["why"] == "ignored by ops-anna: a duplicate: merging by hand"
    unknown = _cli(world, tmp_path, "rejections", "retry", "contacts/customcrm/nope")
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert "no open rejection 'contacts/customcrm/nope'" in unknown.stderr
    assert _cli(world, tmp_path, "rejections", "retry", key).returncode == 0
    (listed,) = _json(_cli(world, tmp_path, "rejections", "--json"))
    assert (listed["state"], listed["retry_after"]) == ("open", None)
    assert world.sync().status == "rejected"  # sent again at once, and refused again
    assert world.sql("select attempts from sync_state.rejections where resolved_at is null") == [(2,)]
