"""One crmsync at a time per state file: two syncs started together do not interleave (the
second says who holds the file and stops), and `plan`, whatever its vars, leaves nothing
that a later sync reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import World
from tests.e2e.test_reliability import _assert_converged, _edit_both_sides


def _crmsync(world: World, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "crmsync.cli", *args], cwd=cwd, env=world.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _marts(world: World) -> dict[str, list[tuple]]:
    tables = [t for (t,) in world.sql(
        "select table_name from information_schema.tables where table_schema = 'main' order by all")]  # fmt: skip
    return {t: sorted(world.sql(f"select * from main.{t}"), key=repr) for t in tables}


def test_two_syncs_started_together_one_runs_and_plan_leaves_nothing_a_sync_reads(
    world: World, tmp_path: Path
) -> None:
    keap_titles = _edit_both_sides(world)
    crm_contact = world.crm_all("contacts")[0]
    world.crm.patch(f"/contacts/{crm_contact['Id']}", json={"Title": "Customcrm title"})

    both = [_crmsync(world, tmp_path, "sync", "--json") for _ in range(2)]
    finished = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in both]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in finished)
    assert codes == [0, 1], finished
    _, out, err = next(f for f in finished if f[0] == 1)
    assert re.fullmatch(
        r"crmsync: another crmsync \(pid \d+, `sync`, started \d\d:\d\d:\d\dZ\) is using "
        rf"{re.escape(str(world.settings.db_path))}; try again when it ends",
        err.strip(),
    ), err
    assert json.loads(out) == {"status": "failed", "error": err.strip().removeprefix("crmsync: ")}
    assert world.sql("select count(*), count(*) filter (where status = 'ok') from sync_state.runs") == [
        (1, 1)
    ]

    # plan with other vars: the reverse flow on would create Keap records; in a copy only
    marts = _marts(world)
    quiet = world.sql("select fingerprint, run_id from sync_state.quiet_inputs")
    assert quiet, "the sync that ran left nothing to write"
    planned = _crmsync(world, tmp_path, "plan", "--json", "--vars", '{"create_in_keap": true}')
    assert planned.wait(timeout=300) == 1  # something is pending: the creates in Keap
    pending = json.loads(planned.stdout.read())["pending"]  # type: ignore[union-attr]
    assert any(p["target"] == "keap" and p["op"] == "create" and p["ready"] for p in pending), pending
    assert _marts(world) == marts
    assert world.sql("select fingerprint, run_id from sync_state.quiet_inputs") == quiet
    assert not (world.settings.db_path.parent / "crmsync.state" / "plan").exists()

    after = world.sync()
    assert after.quiet_since == quiet[0][1]  # the quiet mark held: nothing changed since that run
    links = dict(world.sql("select customcrm_id, keap_id from sync_state.links where mapping = 'contacts'"))
    crm_titles = {crm_contact["Id"]: "Customcrm title"} if crm_contact["Id"] in links else {}
    _assert_converged(world, keap_titles, crm_titles)
