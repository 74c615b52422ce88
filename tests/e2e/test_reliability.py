"""Faults and crashes: repeated runs converge with no duplicate record and no lost edit."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import admin
from tests.e2e.conftest import World

MAPPINGS = {
    "customers": "companies",
    "contacts": "contacts",
    "orders": "opportunities",
    "products": "products",
}


def _edit_both_sides(world: World) -> dict[str, str]:
    """Edits the syncs must carry across, whatever happens to them."""
    edits = {}
    for record in world.keap_all("contacts")[:3]:
        title = f"Keap title {record['id']}"
        world.keap.patch(
            f"/contacts/{record['id']}", params={"update_mask": "job_title"}, json={"job_title": title}
        )
        edits[record["id"]] = title
    return edits


def _assert_converged(world: World, keap_titles: dict[str, str], crm_titles: dict[str, str]) -> None:
    for mapping, resource in MAPPINGS.items():
        keap_ids = {r["id"] for r in world.keap_all(resource)}
        records = world.crm_all(mapping)
        refs = [r["ExternalRefs"].get("keap") for r in records if r["ExternalRefs"].get("keap")]
        assert len(refs) == len(set(refs)), f"duplicate {mapping} in Customcrm"
        links = dict(
            world.sql(f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}'")
        )
        assert set(links) == keap_ids, mapping
        assert len(set(links.values())) == len(links)
    links = dict(world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'contacts'"))
    for keap_id, title in keap_titles.items():
        assert world.crm.get(f"/contacts/{links[keap_id]}").json()["Title"] == title
    reverse = {v: k for k, v in links.items()}
    for crm_id, title in crm_titles.items():
        assert world.keap.get(f"/contacts/{reverse[crm_id]}").json()["job_title"] == title
    world.served()
    final = world.sync()
    keap, crm = world.served()
    assert final.status == "ok" and keap["writes"] == crm["writes"] == 0, final.push.as_dict()


def test_faults_on_both_sides_converge_without_duplicates_or_lost_edits(world: World) -> None:
    keap_titles = _edit_both_sides(world)
    world.served()
    world.faults(error_500=0.1, error_429=0.1, commit_then_fail=0.25, seed=4)
    for _ in range(4):
        outcome = world.sync()
        if outcome.status == "ok" and not outcome.push.wrote:
            break
    keap, crm = world.served()
    for served in (keap, crm):  # the runs above did meet every kind of fault, on both sides
        assert served["injected"].get("error_500", 0) > 0 and served["injected"].get("error_429", 0) > 0
        assert (
            served["injected"].get("commit_then_500", 0) + served["injected"].get("commit_then_drop", 0) > 0
        )
    world.faults()
    for _ in range(3):
        if world.sync().status == "ok":
            break
    _assert_converged(world, keap_titles, {})


def test_a_sync_killed_at_random_points_converges_on_the_next_runs(world: World, tmp_path: Path) -> None:
    keap_titles = _edit_both_sides(world)
    crm_contact = world.crm_all("contacts")[0]
    world.crm.patch(f"/contacts/{crm_contact['Id']}", json={"Title": "Customcrm title"})
    more = world.keap_all("contacts")[3:7]
    env = {
        **os.environ,
        "KEAP_API_URL": world.boxes.keap_url,
        "KEAP_API_KEY": world.boxes.keap.credentials.api_key,
        "CUSTOMCRM_API_URL": world.boxes.customcrm_url,
        "CUSTOMCRM_API_TOKEN": world.boxes.customcrm.credentials.token,
        "CRMSYNC_DB": str(world.settings.db_path),
        "PYTHONUNBUFFERED": "1",
    }
    rng = random.Random(2)
    killed = 0
    # each kill lands at a random point of a run: first within 18 s, then within the time the
    # last run that finished by itself took here (faster machines and builds end sooner)
    run_s = 18.0
    for attempt, record in enumerate(more):
        # an edit before each attempt: no run is a quiet one that ends before its kill
        title = f"Keap title {record['id']} ({attempt})"
        world.keap.patch(
            f"/contacts/{record['id']}", params={"update_mask": "job_title"}, json={"job_title": title}
        )
        keap_titles[record["id"]] = title
        world.faults(error_500=0.05, commit_then_fail=0.2, seed=9 + attempt)
        process = subprocess.Popen(
            [sys.executable, "-m", "crmsync.cli", "sync", "--quiet"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:  # somewhere in extract, dbt or the push
            process.wait(timeout=rng.uniform(0.25, 0.9) * run_s)
            run_s = time.monotonic() - started  # it finished first: aim within its time
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            killed += 1
            process.wait(timeout=60)
        world.faults()
    assert killed >= 2
    for _ in range(3):
        finished = subprocess.run(
            [sys.executable, "-m", "crmsync.cli", "sync", "--quiet"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if finished.returncode == 0:
            break
    assert finished.returncode == 0, finished.stderr
    links = dict(world.sql("select customcrm_id, keap_id from sync_state.links where mapping = 'contacts'"))
    if crm_contact["Id"] in links:
        _assert_converged(world, keap_titles, {crm_contact["Id"]: "Customcrm title"})
    else:  # a Customcrm-only contact: not linked, and left as it is
        assert world.crm.get(f"/contacts/{crm_contact['Id']}").json()["Title"] == "Customcrm title"
        _assert_converged(world, keap_titles, {})


@pytest.mark.synced  # Keap -> Customcrm first (create_in_keap is off by default)
def test_a_keap_create_that_lost_its_answer_is_found_again_not_created_twice(world: World) -> None:
    """The reverse flow (create_in_keap): the intent is recorded before the POST; when the
    answer is lost (committed, then a 500 or a dropped connection), the next run finds the
    record by its natural key and links it."""
    variables = {"create_in_keap": True}
    linked = {r[0] for r in world.sql("select customcrm_id from sync_state.links where mapping = 'products'")}
    crm_only = [c for c in world.crm_all("products") if c["Id"] not in linked]  # no Keap counterpart
    for product in crm_only:  # Keap requires a short description to create a product
        world.crm.patch(f"/products/{product['Id']}", json={"ShortDescription": "made in Customcrm"})
    skus = {c["Sku"] for c in crm_only}
    keap_before = len(world.keap_all("products"))
    # every Keap POST is applied, then its answer lost
    from tests.conftest import admin

    admin(
        world.keap,
        world.boxes.keap_root,
        "/_sandbox/config",
        {"faults": {"commit_then_fail": 1.0, "seed": 1}},
    )
    lost = world.sync(variables=variables)
    admin(world.keap, world.boxes.keap_root, "/_sandbox/config", {"faults": {}})
    assert lost.push.mappings["products"].failed >= len(crm_only) > 0
    assert world.sql("select count(*) from sync_state.keap_create_intents where keap_id is null")[0][0] > 0

    found = world.sync(variables=variables)
    assert found.status == "ok", (found.error, found.push.rejections)
    keap_products = world.keap_all("products")
    assert len(keap_products) == keap_before + len(crm_only)  # created once each, never twice
    assert [p["sku"] for p in keap_products].count(sorted(skus)[0]) == 1
    links = dict(world.sql("select customcrm_id, link_rule from sync_state.links where mapping = 'products'"))
    assert all(links[c["Id"]] == "created_in_keap" for c in crm_only)
    world.served()
    assert not world.sync(variables=variables).push.wrote


def _kill_at_held_write(world: World, cwd: Path, system: str, nth: int, when: str) -> None:
    """Run `crmsync sync` until the sandbox of `system` holds its `nth` write (`when`: before
    or after applying it), then SIGKILL the process right there and let the sandbox go on."""
    client, root = (
        (world.keap, world.boxes.keap_root) if system == "keap" else (world.crm, world.boxes.customcrm_root)
    )
    admin(client, root, "/_sandbox/config", {"faults": {"hold_write": nth, "hold_when": when}})
    process = subprocess.Popen([sys.executable, "-m", "crmsync.cli", "sync", "--quiet"], cwd=cwd, env=world.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while admin(client, root, "/_sandbox/stats")["held"] != when:
            assert process.poll() is None, f"the sync ended before {system}'s write {nth}"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        admin(client, root, "/_sandbox/release", {})
        admin(client, root, "/_sandbox/config", {"faults": {}})


def _marts(world: World) -> dict[str, list[tuple]]:
    tables = [t for (t,) in world.sql(
        "select table_name from information_schema.tables where table_schema = 'main' order by table_name")]  # fmt: skip
    return {t: sorted(world.sql(f"select * from main.{t}"), key=repr) for t in tables}


def test_syncs_started_together_or_killed_at_a_chosen_write_converge_and_plan_leaves_nothing_behind(
    world: World, tmp_path: Path
) -> None:
    """One crmsync per state file: two syncs started together do not interleave, the second
    says who holds the file. A sync SIGKILLed at a write (after it was applied, its answer
    unread; before it was applied) converges on the next run. `plan`, whatever its vars,
    leaves nothing a sync reads. (In processes of their own: dbt in this process would keep
    the DuckDB file open.)"""
    both = [subprocess.Popen([sys.executable, "-m", "crmsync.cli", "sync", "--json"], cwd=tmp_path, env=world.env(),
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    finished_together = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in both]  # type: ignore[union-attr]
    assert sorted(code for code, _, _ in finished_together) == [0, 1], finished_together
    _, out, err = next(f for f in finished_together if f[0] == 1)
    assert re.fullmatch(
        r"crmsync: another crmsync \(pid \d+, `sync`, started \d\d:\d\d:\d\dZ\) is using "
        rf"{re.escape(str(world.settings.db_path))}; try again when it ends",
        err.strip(),
    ), err
    answer = json.loads(out)
    assert (answer["status"], answer["exit_code"], answer["error"]) == (
        "failed",
        1,
        err.strip().removeprefix("crmsync: "),
    )
    assert world.sql("select status from sync_state.runs") == [("ok",)]  # the second never began

    keap_titles = _edit_both_sides(world)  # three Customcrm updates due
    to_keap = world.sql(
        "select customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id desc limit 3"
    )
    crm_titles = {}
    for (customcrm_id,) in to_keap:  # three Keap PATCHes due
        world.crm.patch(f"/contacts/{customcrm_id}", json={"Title": f"Customcrm title {customcrm_id}"})
        crm_titles[customcrm_id] = f"Customcrm title {customcrm_id}"
    new = world.keap.post("/contacts", json={"given_name": "Killed", "email_addresses": [
        {"email": "killed@x.example", "field": "EMAIL1"}]}).json()  # a Customcrm create due  # fmt: skip

    # applied, its answer never read: the contacts batch (the create and the three updates)
    _kill_at_held_write(world, tmp_path, "customcrm", 1, "after")
    # never applied: the second Keap PATCH (the first went through, unrecorded)
    _kill_at_held_write(world, tmp_path, "keap", 2, "before")
    runs = world.sql("select status, summary->>'error' from sync_state.runs order by started_at")
    assert runs[1:] == [  # the killed runs: the second closed the first's row at its start
        ("interrupted", "the run ended without closing its row (killed, or the file was locked)"),
        ("running", None),
    ]

    finished = world.sync()
    assert finished.status == "ok", (finished.error, finished.push.as_dict())
    assert world.sql("select count(*) from sync_state.runs where status = 'running'") == [(0,)]  # closed
    assert [c["ExternalRefs"].get("keap") for c in world.crm_all("contacts")].count(new["id"]) == 1

    # plan with other vars (the reverse flow on would create Keap records): in a copy only
    marts = _marts(world)
    quiet = world.sql("select fingerprint, run_id from sync_state.quiet_inputs")
    assert quiet, "the run that finished left nothing to write"
    planned = subprocess.run([sys.executable, "-m", "crmsync.cli", "plan", "--json", "--detailed-exitcode", "--vars",
                              '{"create_in_keap": true}'],
                             cwd=tmp_path, env=world.env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert planned.returncode == 2, planned.stderr  # something is pending: the creates in Keap
    pending = json.loads(planned.stdout)["pending"]
    assert any(p["target"] == "keap" and p["op"] == "create" and p["ready"] for p in pending), pending
    assert _marts(world) == marts
    assert world.sql("select fingerprint, run_id from sync_state.quiet_inputs") == quiet
    assert not (world.settings.db_path.parent / "crmsync.state" / "plan").exists()
    assert world.sync().quiet_since == quiet[0][1]  # the quiet mark held: nothing changed since that run
    _assert_converged(world, keap_titles, crm_titles)
