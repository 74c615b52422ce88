"""Many Keap accounts on one installation: `crmsync sync --all-tenants` syncs each tenant of
the tenants file into its own state, a bounded number at once, and one tenant's failure
stops none of the others (crmsync.tenants, crmsync.tenant_runs)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from crmsync.readonly import QueryError, run_query
from sandbox.bundle import Sandboxes
from tests.conftest import admin, crm_http, keap_http

KINDS = {"customers": "companies", "contacts": "contacts", "orders": "opportunities", "products": "products"}


def _keap_ids(boxes: Sandboxes) -> dict[str, set[str]]:
    with keap_http(boxes) as keap:
        return {
            mapping: {str(r["id"]) for r in keap.get(f"/{kind}", params={"page_size": 1000}).json()[kind]}
            for mapping, kind in KINDS.items()
        }


def _linked(state: Path) -> dict[str, set[str]]:
    with duckdb.connect(str(state), read_only=True) as con:
        query = "select keap_id from link_{} where link_status = 'linked'"
        return {
            mapping: {row[0] for row in con.execute(query.format(mapping)).fetchall()} for mapping in KINDS
        }


def _second_account(sandboxes: Sandboxes, tmp_path: Path) -> Sandboxes:
    """Two accounts of demo data, acme's in `sandboxes` (8 per kind) and beta's in sandboxes
    of their own (6 per kind, started: the caller stops them), Customcrm unpaced in both."""
    beta = Sandboxes(tmp_path / "sandbox-beta").start()
    try:
        sandboxes.seed_demo(size=8, seed=3)
        beta.seed_demo(size=6, seed=5)
        for boxes in (sandboxes, beta):
            with crm_http(boxes) as crm:
                admin(crm, boxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    except BaseException:
        beta.stop()
        raise
    return beta


def _crmsync(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmsync.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def test_all_tenants_sync_each_account_into_its_own_state_and_a_failing_one_stops_none(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    beta = _second_account(sandboxes, tmp_path)
    try:
        (tmp_path / "acme-crm.token").write_text(sandboxes.customcrm.credentials.token + "\n")
        (tmp_path / "tenants.toml").write_text(f"""
[tenants.acme]
keap_api_url = "{sandboxes.keap_url}"
keap_api_key = {{ env = "ACME_KEAP_KEY" }}
customcrm_api_url = "{sandboxes.customcrm_url}"
customcrm_api_token = {{ file = "acme-crm.token" }}
[tenants.acme.options]
conflict_policy = "keap"

[tenants.beta]
keap_api_url = "{beta.keap_url}"
keap_api_key = {{ env = "BETA_KEAP_KEY" }}
customcrm_api_url = "{beta.customcrm_url}"
customcrm_api_token = {{ env = "BETA_CRM_TOKEN" }}
state = "beta/state.duckdb"

[tenants.revoked]
keap_api_url = "{beta.keap_url}"
keap_api_key = {{ env = "REVOKED_KEAP_KEY" }}
customcrm_api_url = "{beta.customcrm_url}"
customcrm_api_token = {{ env = "BETA_CRM_TOKEN" }}
""")
        (tmp_path / "tenants.toml").chmod(0o600)  # whatever this machine's umask
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEAP_", "CUSTOMCRM_", "CRMSYNC_"))}
        env.update({
            "ACME_KEAP_KEY": sandboxes.keap.credentials.api_key,
            "BETA_KEAP_KEY": beta.keap.credentials.api_key,
            "BETA_CRM_TOKEN": beta.customcrm.credentials.token,
            "REVOKED_KEAP_KEY": "a-key-keap-no-longer-knows",
            # the operator's own configuration, which no tenant may use
            "KEAP_API_KEY": sandboxes.keap.credentials.api_key,
            "CRMSYNC_DB": str(tmp_path / "operator.duckdb"),
        })  # fmt: skip

        done = _crmsync(tmp_path, env, "sync", "--all-tenants", "--parallel", "2")
        assert done.returncode == 1, done.stdout + done.stderr  # one tenant failed: the worst exit code
        # as in a log (not a terminal): each line stamped with the time and its tenant's run id
        stamps = [
            re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run=(\S+) (.*)", line)
            for line in done.stdout.splitlines()
        ]
        assert all(stamps), done.stdout
        lines = [stamp[2] for stamp in stamps if stamp]
        for stamp in stamps[:-1]:
            assert stamp and stamp[2].split(": run ")[1].startswith(stamp[1] + " ")
        assert stamps[-1] and stamps[-1][1] == "all-tenants"
        assert sorted(line.split(":")[0] for line in lines[:-1]) == ["acme", "beta", "revoked"]
        by_tenant = {line.split(":")[0]: line for line in lines[:-1]}
        assert " ok (exit 0) in " in by_tenant["acme"] and " ok (exit 0) in " in by_tenant["beta"]
        assert re.fullmatch(r"revoked: run \S+ failed \(exit 1\) in [\d.]+ s: keap refused the credentials \(401\); "
                            r"check the keap_\* keys of tenant 'revoked' in the tenants file \[keap GET .*/companies -> "
                            r"401\]: .*", by_tenant["revoked"])  # fmt: skip
        assert "revoked" not in done.stderr  # said once, in its line
        assert lines[-1].startswith("tenants: 2 of 3 ok in ") and lines[-1].endswith(
            "; not ok: revoked (exit 1)"
        )

        # each account linked whole, into its own file; the operator's file was never made
        acme_state, beta_state = (
            tmp_path / "data" / "tenants" / "acme.duckdb",
            tmp_path / "beta" / "state.duckdb",
        )
        assert _linked(acme_state) == _keap_ids(sandboxes)
        assert _linked(beta_state) == _keap_ids(beta)
        assert [len(ids) for ids in _linked(beta_state).values()] == [6, 6, 6, 6]
        assert not (tmp_path / "operator.duckdb").exists()
        assert stat.S_IMODE(acme_state.stat().st_mode) == 0o600

        status = _crmsync(tmp_path, env, "status", "--all-tenants", "--json")
        assert status.returncode == 0, status.stderr
        found = {row["tenant"]: row for row in json.loads(status.stdout)}
        assert (found["acme"]["linked"], found["beta"]["linked"], found["revoked"]["linked"]) == (32, 24, 0)
        assert [found[t]["last_run"]["status"] for t in ("acme", "beta", "revoked")] == ["ok", "ok", "failed"]
        # at most two at once: the third started only once one of the first two had ended
        first_end = min(found[t]["last_run"]["finished_at"] for t in ("acme", "beta"))
        assert found["revoked"]["last_run"]["started_at"] >= first_end

        # an analyst's view across the tenants: a view per mart with the tenant first; still read-only
        query = (
            "select tenant, count(*) from link_contacts where link_status = 'linked' group by all order by 1"
        )
        across = _crmsync(tmp_path, env, "sql", "--all-tenants", "--format", "csv", query)
        assert across.returncode == 0, across.stderr
        assert across.stdout.splitlines() == [
            "tenant,count_star()",
            "acme,8",
            "beta,6",
        ]  # revoked never built
        one = _crmsync(tmp_path, env, "sql", "--all-tenants", "--format", "csv",
                       'select count(*) from "beta".main.link_contacts where link_status = \'linked\'')  # fmt: skip
        assert one.stdout.splitlines()[1] == "6"
        done = _crmsync(tmp_path, env, "sql", "--all-tenants", "copy link_contacts to 'out.csv'")
        assert done.returncode == 1 and done.stderr.startswith("crmsync: query refused: "), done.stderr
        states = {"acme": acme_state, "beta": beta_state}  # the rest in this process: the same function
        for refused in ("attach 'other.duckdb' as other", 'delete from "acme".main.link_contacts',
                        "create table kept as select 1", "select 1; detach beta",
                        f"""detach "acme"; attach '{acme_state}' as again; delete from again.main.link_contacts"""):  # fmt: skip
            with pytest.raises(QueryError, match=r"^query refused: "):
                run_query(tmp_path / "unused.duckdb", refused, tenants=states)
        assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()
        assert _linked(acme_state) == _keap_ids(sandboxes)  # untouched

        # each tenant's own options: acme's policy lets Keap win every conflict, beta's the newer value
        winners = "select distinct winner from sync_state.conflicts order by 1"
        acme = _crmsync(tmp_path, env, "sql", "--tenant", "acme", "--format", "csv", winners)
        beta_winners = _crmsync(tmp_path, env, "sql", "--tenant", "beta", "--format", "csv", winners)
        assert acme.stdout.splitlines() == ["winner", "keap"], acme.stdout + acme.stderr
        assert beta_winners.stdout.splitlines() == ["winner", "customcrm", "keap"], beta_winners.stdout

        # one tenant's own commands, as for a single account
        runs = _crmsync(tmp_path, env, "runs", "--tenant", "beta", "--json")
        assert runs.returncode == 0 and [r["status"] for r in json.loads(runs.stdout)] == ["ok"]
    finally:
        beta.stop()


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat_file.parent.name))
    return found


def test_stopping_all_tenants_stops_every_tenants_sync(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        (tmp_path / "tenants.toml").write_text(
            "".join(
                f"""
[tenants.{name}]
keap_api_url = "{url}/crm/rest/v2"
keap_api_key = {{ env = "A_KEY" }}
customcrm_api_url = "{url}/api/v1"
customcrm_api_token = {{ env = "A_KEY" }}
"""
                for name in ("one", "two", "three")
            )
        )
        (tmp_path / "tenants.toml").chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEAP_", "CUSTOMCRM_", "CRMSYNC_"))}
        env["A_KEY"] = "any"
        parent = subprocess.Popen([sys.executable, "-m", "crmsync.cli", "sync", "--all-tenants"], cwd=tmp_path,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(tenants := _children(parent.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(tenants) == 2, "the first two tenants' syncs never started"
            time.sleep(3)  # well into their first request, which is never answered
            parent.send_signal(signal.SIGTERM)
            out, _ = parent.communicate(timeout=30)
        finally:
            parent.kill()
    assert parent.returncode == 128 + signal.SIGTERM
    assert not [pid for pid in tenants if Path(f"/proc/{pid}").exists()], (
        "a tenant's sync outlived its parent"
    )
    assert "three" not in out  # never started


def _linked_on(warehouse: str, schema: str) -> dict[str, set[str]]:
    import psycopg2

    with psycopg2.connect(warehouse) as con, con.cursor() as cursor:
        found = {}
        for mapping in KINDS:
            cursor.execute(f"select keap_id from {schema}.link_{mapping} where link_status = 'linked'")
            found[mapping] = {row[0] for row in cursor.fetchall()}
        return found


def test_tenants_on_one_postgresql_warehouse_keep_schemas_of_their_own_and_views_across_them(
    sandboxes: Sandboxes, tmp_path: Path, warehouse: str
) -> None:
    """Two tenants with `warehouse`: each syncs into schemas of its own prefix (acme_main,
    beta_co_main, ...), at once (their advisory locks are their own), the process's own
    warehouse unused; the all_tenants views show both; status and sql --all-tenants read
    them; a plan of one leaves nothing behind."""
    import psycopg2

    beta = _second_account(sandboxes, tmp_path)
    try:
        entries = []
        for name, boxes in (("acme", sandboxes), ("beta-co", beta)):
            key = name.upper().replace("-", "_")
            entries.append(f"""
[tenants.{name}]
keap_api_url = "{boxes.keap_url}"
keap_api_key = {{ env = "{key}_KEAP_KEY" }}
customcrm_api_url = "{boxes.customcrm_url}"
customcrm_api_token = {{ env = "{key}_CRM_TOKEN" }}
warehouse = {{ env = "WAREHOUSE_URL" }}
""")
        (tmp_path / "tenants.toml").write_text("".join(entries))
        (tmp_path / "tenants.toml").chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEAP_", "CUSTOMCRM_", "CRMSYNC_"))}
        env.update({
            "ACME_KEAP_KEY": sandboxes.keap.credentials.api_key,
            "ACME_CRM_TOKEN": sandboxes.customcrm.credentials.token,
            "BETA_CO_KEAP_KEY": beta.keap.credentials.api_key,
            "BETA_CO_CRM_TOKEN": beta.customcrm.credentials.token,
            "WAREHOUSE_URL": warehouse,
            # the operator's own warehouse, which no tenant may use: not even reachable
            "CRMSYNC_WAREHOUSE": "postgresql://nobody:nothing@127.0.0.1:1/nowhere",
        })  # fmt: skip

        done = _crmsync(tmp_path, env, "sync", "--all-tenants", "--parallel", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "all_tenants: " in done.stderr and "views across acme, beta-co" in done.stderr, done.stderr

        assert _linked_on(warehouse, "acme_main") == _keap_ids(sandboxes)  # each account linked whole
        assert _linked_on(warehouse, "beta_co_main") == _keap_ids(beta)
        assert [len(ids) for ids in _linked_on(warehouse, "beta_co_main").values()] == [6, 6, 6, 6]
        assert not (tmp_path / "data" / "tenants" / "acme.duckdb").exists()  # no DuckDB file: the warehouse
        with psycopg2.connect(warehouse) as con, con.cursor() as cursor:
            cursor.execute("select nspname from pg_namespace where nspname like any(array['acme%', 'beta%', 'all%',"
                           " 'crmsync_plan%', 'main', 'sync_state'])")  # fmt: skip
            schemas = {row[0] for row in cursor.fetchall()}
            cursor.execute("select tenant, count(*) from all_tenants.link_contacts where link_status = 'linked' "
                           "group by tenant order by tenant")  # fmt: skip
            across = cursor.fetchall()
        assert {"acme_main", "acme_sync_state", "acme_raw_keap", "beta_co_main", "beta_co_sync_state",
                "all_tenants"} <= schemas, schemas  # fmt: skip
        assert not {"main", "sync_state"} & schemas  # no tenant wrote unprefixed schemas
        assert [tenant for tenant, _ in across] == ["acme", "beta-co"]
        assert dict(across) == {
            "acme": len(_linked_on(warehouse, "acme_main")["contacts"]),
            "beta-co": len(_linked_on(warehouse, "beta_co_main")["contacts"]),
        }

        status = _crmsync(tmp_path, env, "status", "--all-tenants", "--json")
        assert status.returncode == 0, status.stderr
        rows = {row["tenant"]: row for row in json.loads(status.stdout)}
        assert rows["acme"]["linked"] > 0 and rows["beta-co"]["linked"] > 0
        assert rows["acme"]["state"] == "schemas acme_*" and rows["acme"]["last_run"]["status"] == "ok"

        query = "select tenant, count(*) from link_contacts group by tenant order by tenant"
        answered = _crmsync(tmp_path, env, "sql", "--all-tenants", "--format", "json", query)
        assert answered.returncode == 0, answered.stderr
        assert [row["tenant"] for row in json.loads(answered.stdout)] == ["acme", "beta-co"]
        for write in ("delete from acme_sync_state.runs",  # not a reading statement
                      # one that starts as one: the read-only transaction refuses it
                      "with gone as (delete from acme_sync_state.runs returning 1) select count(*) from gone"):  # fmt: skip
            refused = _crmsync(tmp_path, env, "sql", "--all-tenants", write)
            assert refused.returncode == 1 and "query refused: crmsync sql only reads" in refused.stderr, (
                refused.stderr
            )
        kept = _crmsync(
            tmp_path, env, "sql", "--tenant", "acme", "select count(*) as runs from sync_state.runs"
        )
        assert kept.returncode == 0 and kept.stdout.splitlines()[1] != "0", kept.stdout + kept.stderr

        # the docs describe a tenant's own schemas, as its last sync built them
        documented = _crmsync(tmp_path, env, "docs", "--tenant", "acme", "--no-serve")
        assert documented.returncode == 0, documented.stderr
        catalog = json.loads(
            (tmp_path / "data" / "tenants" / "acme.state" / "docs" / "catalog.json").read_text()
        )
        described = {node["metadata"]["schema"] for node in catalog["nodes"].values()}
        assert {"acme_main", "acme_intermediate", "acme_staging"} <= described, described

        # the retention finds a tenant's personal data in its own schemas
        aged = _crmsync(tmp_path, env, "retention", "--tenant", "acme", "--days", "0")
        assert aged.returncode == 0, aged.stderr
        operations = next(
            line for line in aged.stdout.splitlines() if line.startswith("sync_state.operations")
        )
        assert int(operations.split("\t")[2]) > 0, aged.stdout

        # a plan killed hard left its scratch copy behind; another plan is running now
        live = psycopg2.connect(warehouse)
        live.autocommit = True
        with live.cursor() as cursor:
            cursor.execute("create schema crmsync_plan_deadbeef_acme_raw_keap")
            cursor.execute("create schema crmsync_plan_cafecafe_acme_raw_keap")
            cursor.execute("select pg_advisory_lock(hashtext('crmsync_crmsync_plan_cafecafe_'))")
        try:
            planned = _crmsync(tmp_path, env, "plan", "--tenant", "acme", "--json", "--vars",
                               '{"create_in_keap": true}')  # fmt: skip
            assert planned.returncode in (0, 2), planned.stderr
            with psycopg2.connect(warehouse) as con, con.cursor() as cursor:
                cursor.execute("select nspname from pg_namespace where nspname like 'crmsync_plan%'")
                # this plan's copy and the dead plan's are gone; the live one's is not touched
                assert cursor.fetchall() == [("crmsync_plan_cafecafe_acme_raw_keap",)]
        finally:
            live.close()
        again = _crmsync(tmp_path, env, "sync", "--tenant", "acme", "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["quiet_since"], again.stdout  # the plan touched nothing it reads
    finally:
        beta.stop()
