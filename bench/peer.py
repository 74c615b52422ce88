"""Figure: drt and reverse_etl push the same customers from DuckDB into Customcrm: new
ones (`creates`), and edits of linked ones (`updates`).

    python -m bench.peer [--size 10000] [--rounds 2] [--scenario creates --scenario updates]

drt (`drt-core`, the open-source reverse-ETL CLI; installed by `make bench`) against this
project's push, on the same rows, the same sandbox and the same limits:

- Setup, not timed: Keap holds `size` demo companies, Customcrm nothing; the extract and
  `dbt build` leave `size` creates in `sync_customcrm__customers`. drt's model is the
  same rows with one column per Customcrm field (`peer_customers`), what a drt user
  would select; its batch template writes the same operations, with the same
  per-operation idempotency keys, to Customcrm's batch endpoint (100 per call, the
  API's maximum), paced at the published 20 requests/s with a burst of 40.
- `updates`, setup not timed either: the same companies created in Customcrm by this
  project's push and linked, then every one of them edited in Keap (its notes), extracted
  and built again: `size` updates in `sync_customcrm__customers`, each a merge patch of the
  changed field with If-Match on the version the extract saw. drt's model is the same rows
  (id, If-Match, one column per changed field); its template sends the same update
  operations, 100 per batch call. Each run starts from copies of both sandboxes' files
  as the setup left them.
- Each round runs both tools, alternating which goes first. Every run gets an empty
  Customcrm sandbox in its own process (default limits) and a fresh copy of the DuckDB
  file; the tool runs in a process of its own and its wall time is that process's,
  start-up included. Requests are counted by the sandbox; the customers it holds
  afterwards are counted too (each run must leave exactly `size`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from bench.common import RunningSandboxes, emit, machine, sandboxes
from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from crmsync.dbt import build as dbt_build
from pipelines.ingest import extract
from reverse_etl.push import Pusher
from reverse_etl.state import ensure_state
from sandbox.customcrm.app import CustomcrmSandbox
from sandbox.demo import generate
from sandbox.keap.app import KeapSandbox

PUSH = """
import json, sys, time
from pathlib import Path
from connectors.customcrm import customcrm_client
from connectors.keap import keap_client
from reverse_etl.push import Pusher
db, keap_url, keap_key, crm_url, crm_token = sys.argv[1:6]
keap, crm = keap_client(base_url=keap_url, api_key=keap_key), customcrm_client(base_url=crm_url, token=crm_token)
started = time.perf_counter()
result = Pusher(Path(db), "peer-bench", keap, crm, mappings=("customers",)).run()
print(json.dumps({"push_seconds": time.perf_counter() - started, **result.as_dict()["mappings"]["customers"]}))
"""


META = ("keap_id", "customcrm_id", "if_match", "idempotency_key")  # not fields of the record


def prepare(work: Path, size: int, scenario: str = "creates") -> tuple[Path, Path]:
    """The DuckDB file the push starts from, and the sandboxes' folder every run copies:
    `creates`: Keap with `size` companies and an empty Customcrm; `updates`: those companies
    linked to customers the push created, then each edited in Keap."""
    if scenario == "updates":
        return prepare_updates(work, size)
    keap_side, scratch = work / "keap-only", work / "scratch"
    keap, thrown_away = KeapSandbox(keap_side), CustomcrmSandbox(scratch)
    generate(keap.store, thrown_away.store, size=size, seed=42, customcrm_share=0.0)
    keap.store.close()
    thrown_away.store.close()
    db = work / "peer.duckdb"
    with sandboxes(fresh_dir(work, keap_side, "setup"), None) as boxes:
        extract(
            db,
            work / "peer.state",
            keap_client(
                base_url=boxes.keap_url,
                api_key=boxes.keap_key,
                pacer=KeapPacer(per_second=1e6, per_minute=1e9),
            ),
            customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token),
        )
    ensure_state(db)
    dbt_build(db)
    peer_table(db, "create", size)
    return db, keap_side


def prepare_updates(work: Path, size: int) -> tuple[Path, Path]:
    db, keap_side = prepare(work, size, "creates")
    folder = fresh_dir(work, keap_side, "linked")
    with sandboxes(folder, None) as boxes:
        keap = keap_client(base_url=boxes.keap_url, api_key=boxes.keap_key,
                           pacer=KeapPacer(per_second=1e6, per_minute=1e9))  # fmt: skip
        crm = customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token)
        created = Pusher(db, "peer-setup", keap, crm, mappings=("customers",)).run()
        assert created.mappings["customers"].created == size, created.as_dict()
        with httpx.Client(base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap_key},
                          timeout=60) as api:  # fmt: skip
            with duckdb.connect(str(db), read_only=True) as con:
                ids = [row[0] for row in con.execute(
                    "select keap_id from main.sync_customcrm__customers order by keap_id").fetchall()]  # fmt: skip
            for keap_id in ids:
                api.patch(f"/companies/{keap_id}", params={"update_mask": "notes"},
                          json={"notes": EDIT}).raise_for_status()  # fmt: skip
        extract(db, work / "peer.state", keap, crm)
        keap.close()
        crm.close()
    dbt_build(db)
    peer_table(db, "update", size)
    return db, folder


EDIT = "edited in Keap for bench.peer"


def peer_table(db: Path, op: str, size: int) -> None:
    """`main.peer_customers`: the push mart's ready rows of `op`, one column per field."""
    with duckdb.connect(str(db)) as con:
        rows = con.execute(
            """select keap_id, customcrm_id, if_match, idempotency_key, payload::varchar
               from main.sync_customcrm__customers
               where op = ? and status = 'ready' order by keap_id""",
            [op],
        ).fetchall()
        assert len(rows) == size, f"expected {size} customers to {op}, the models hold {len(rows)}"
        flattened = [{**dict(zip(META, row[:4], strict=True)), **_flat(json.loads(row[4]))} for row in rows]
        columns = sorted({c for row in flattened for c in row})
        shapes = {frozenset(row) for row in flattened}
        # a column a row lacks is sent as null: a create leaves the field empty, as it would,
        # but in an update's merge patch it would clear the field
        assert op == "create" or len(shapes) == 1, f"the {op} payloads differ in their fields: {len(shapes)}"
        con.execute(
            "create or replace table main.peer_customers ("
            + ", ".join(f'"{c}" varchar' for c in columns)
            + ")"
        )
        con.executemany(
            f"insert into main.peer_customers values ({', '.join('?' for _ in columns)})",
            [[row.get(c) for c in columns] for row in flattened],
        )
        con.execute("checkpoint")  # the runs start from copies of the file: nothing may stay in the WAL


def _flat(payload: dict[str, Any]) -> dict[str, Any]:
    """One column per field; objects (ExternalRefs) as one column per key."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            flat.update({f"{key}__{inner}": v for inner, v in value.items()})
        else:
            flat[key] = None if value is None else str(value)
    return flat


def fresh_dir(work: Path, source: Path, name: str) -> Path:
    """A sandbox folder holding copies of the sandboxes' files in `source`: the Keap data
    alone (an empty Customcrm) for creates, both for updates."""
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for data in source.glob("*.sqlite3"):
        shutil.copy(data, target / data.name)
    return target


def drt_project(work: Path, db: Path, boxes: RunningSandboxes, columns: list[str], op: str) -> Path:
    """What a drt user writes: a profile, a project and one sync."""
    home = work / "drt-home"
    (home / ".drt").mkdir(parents=True, exist_ok=True)
    (home / ".drt" / "profiles.yml").write_text(json.dumps({"peer": {"type": "duckdb", "database": str(db)}}))
    project = work / "drt-project"
    (project / "syncs").mkdir(parents=True, exist_ok=True)
    (project / "drt_project.yml").write_text(json.dumps({"name": "crmsync_peer", "profile": "peer"}))
    fields: dict[str, str] = {}
    refs: list[str] = []
    for column in columns:
        if column in META:
            continue
        if "__" in column:
            refs.append(column)
        else:
            fields[column] = f'"{column}": {{{{ row["{column}"] | tojson_safe }}}}'
    objects: dict[str, list[str]] = {}
    for column in refs:
        outer, inner = column.split("__", 1)
        objects.setdefault(outer, []).append(f'"{inner}": {{{{ row["{column}"] | tojson_safe }}}}')
    data = ", ".join([*fields.values(), *(f'"{o}": {{{", ".join(v)}}}' for o, v in objects.items())])
    addressed = (
        '"idempotency_key": {{ row.idempotency_key | tojson_safe }}'
        if op == "create"
        else '"id": {{ row.customcrm_id | tojson_safe }}, "if_match": {{ row.if_match | tojson_safe }}'
    )
    template = (
        '{"operations": [{% for row in rows %}{"op": "' + op + '", ' + addressed + ', "data": {' + data + "}}"
        "{% if not loop.last %}, {% endif %}{% endfor %}]}"
    )
    sync = {
        "name": "customers",
        "model": "select * from main.peer_customers order by keap_id",
        "destination": {
            "type": "rest_api",
            "url": boxes.customcrm_url + "/customers/batch",
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "auth": {"type": "bearer", "token_env": "CUSTOMCRM_API_TOKEN"},
            "body_mode": "batch",
            "batch_template": template,
            "max_records_per_request": 100,
        },
        "sync": {
            "mode": "full",
            "batch_size": 100,
            "on_error": "skip",
            "rate_limit": {"requests_per_second": 20, "burst": 40},
        },
    }
    (project / "syncs" / "customers.yml").write_text(json.dumps(sync, indent=2))
    return project


def run_tool(tool: str, work: Path, db: Path, start: Path, label: str, op: str) -> dict[str, Any]:
    copy = work / f"{label}.duckdb"
    shutil.copy(db, copy)
    with sandboxes(fresh_dir(work, start, label), None, customcrm_limits="default") as boxes:
        boxes.reset_stats()
        if tool == "drt":
            with duckdb.connect(str(copy), read_only=True) as con:
                columns = [r[0] for r in con.execute("describe main.peer_customers").fetchall()]
            project = drt_project(work / label, copy, boxes, columns, op)
            command = [str(Path(sys.executable).parent / "drt"), "run", "--select", "customers"]
            env = {
                **os.environ,
                "HOME": str(work / label / "drt-home"),
                "CUSTOMCRM_API_TOKEN": boxes.customcrm_token,
            }
            cwd: Path | None = project
        else:
            command = [sys.executable, "-c", PUSH, str(copy), boxes.keap_url, boxes.keap_key,
                       boxes.customcrm_url, boxes.customcrm_token]  # fmt: skip
            env, cwd = {**os.environ}, None
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)
        seconds = time.perf_counter() - started
        if finished.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
            )
        crm = boxes.admin("customcrm", "/_sandbox/stats")
        keap = boxes.admin("keap", "/_sandbox/stats")
        held = boxes.admin("customcrm", "/_sandbox/counts")["customers"]["live"]
        boxes.admin("customcrm", "/_sandbox/config", {"limits": "off"})  # the check's reads are not timed
        digest, edited = _customers_digest(boxes)
    return {
        "tool": tool,
        "seconds": round(seconds, 1),
        "customcrm_requests": crm["total"],
        "customcrm_writes": crm["writes"],
        "customcrm_429": crm["by_status"].get("429", 0),
        "keap_requests": keap["total"],
        "customers_held": held,
        "customers_with_the_edit": edited,
        "records_digest": digest,
    }


def _customers_digest(boxes: RunningSandboxes) -> tuple[str, int]:
    """What the run left in Customcrm, but for what the API assigns (ids, versions, times),
    and how many customers hold the Keap edit of the `updates` setup."""
    import hashlib

    assigned = {"Id", "Version", "CreatedAt", "UpdatedAt"}
    records, cursor = [], None
    with httpx.Client(base_url=boxes.customcrm_url, timeout=60,
                      headers={"Authorization": f"Bearer {boxes.customcrm_token}"}) as crm:  # fmt: skip
        while True:
            answer = crm.get("/customers", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
            page = answer.raise_for_status().json()
            records += [{k: v for k, v in r.items() if k not in assigned} for r in page["data"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
    canonical = sorted(json.dumps(r, sort_keys=True) for r in records)
    edited = sum(1 for r in records if r.get("Description") == EDIT)
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:16], edited


def run(size: int, rounds: int, scenario: str = "creates") -> None:
    op = {"creates": "create", "updates": "update"}[scenario]
    with tempfile.TemporaryDirectory(prefix="crmsync-peer-") as tmp:
        work = Path(tmp)
        db, start = prepare(work, size, scenario)
        figures: dict[str, list[dict[str, Any]]] = {"drt": [], "reverse_etl": []}
        for number in range(rounds):
            order = ("drt", "reverse_etl") if number % 2 == 0 else ("reverse_etl", "drt")
            for tool in order:
                result = run_tool(tool, work, db, start, f"{tool}-{number}", op)
                figures[tool].append(result)
                emit("peer", {"scenario": scenario, "size": size, "round": number + 1, **result})
        best = {tool: min(r["seconds"] for r in runs) for tool, runs in figures.items()}
        emit("peer_summary", {
            "scenario": scenario, "size": size, "rounds": rounds,
            "drt_seconds_best": best["drt"], "reverse_etl_seconds_best": best["reverse_etl"],
            "time_ratio_reverse_etl_to_drt": round(best["reverse_etl"] / best["drt"], 2),
            "drt_requests": figures["drt"][0]["customcrm_requests"],
            "reverse_etl_requests": figures["reverse_etl"][0]["customcrm_requests"],
            "same_records": len({r["records_digest"] for runs in figures.values() for r in runs}) == 1,
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000, help="new customers to push")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tool, alternating")
    parser.add_argument("--scenario", choices=["creates", "updates"], action="append",
                        help="repeatable; both by default")  # fmt: skip
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    for scenario in args.scenario or ["creates", "updates"]:
        run(args.size, args.rounds, scenario)


if __name__ == "__main__":
    main()
