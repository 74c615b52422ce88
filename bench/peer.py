"""Figure: drt and reverse_etl push the same new customers from DuckDB into Customcrm.

    python -m bench.peer [--size 10000] [--rounds 2]

drt (`drt-core`, the open-source reverse-ETL CLI; installed by `make bench`) against this
project's push, on the same rows, the same sandbox and the same limits:

- Setup, not timed: Keap holds `size` demo companies, Customcrm nothing; the extract and
  `dbt build` leave `size` creates in `sync_customcrm__customers`. drt's model is the
  same rows with one column per Customcrm field (`peer_customers`), what a drt user
  would select; its batch template writes the same operations, with the same
  per-operation idempotency keys, to Customcrm's batch endpoint (100 per call, the
  API's maximum), paced at the published 20 requests/s with a burst of 40.
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

from bench.common import RunningSandboxes, emit, machine, sandboxes
from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from crmsync.dbt import build as dbt_build
from pipelines.ingest import extract
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


def prepare(work: Path, size: int) -> tuple[Path, Path]:
    """Keap with `size` companies and an empty Customcrm; the DuckDB file the push starts from."""
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
    with duckdb.connect(str(db)) as con:
        rows = con.execute(
            """select keap_id, idempotency_key, payload::varchar from main.sync_customcrm__customers
               where op = 'create' and status = 'ready' order by keap_id"""
        ).fetchall()
        assert len(rows) == size, f"expected {size} customers to create, the models hold {len(rows)}"
        flattened = [{"keap_id": k, "idempotency_key": i, **_flat(json.loads(p))} for k, i, p in rows]
        columns = sorted({c for row in flattened for c in row})
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
    return db, keap_side


def _flat(payload: dict[str, Any]) -> dict[str, Any]:
    """One column per field; objects (ExternalRefs) as one column per key."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            flat.update({f"{key}__{inner}": v for inner, v in value.items()})
        else:
            flat[key] = None if value is None else str(value)
    return flat


def fresh_dir(work: Path, keap_side: Path, name: str) -> Path:
    """A sandbox folder holding the Keap data and no Customcrm data (an empty Customcrm)."""
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    shutil.copy(keap_side / "keap.sqlite3", target / "keap.sqlite3")
    return target


def drt_project(work: Path, db: Path, boxes: RunningSandboxes, columns: list[str]) -> Path:
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
        if column in ("keap_id", "idempotency_key"):
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
    template = (
        '{"operations": [{% for row in rows %}{"op": "create", '
        '"idempotency_key": {{ row.idempotency_key | tojson_safe }}, "data": {' + data + "}}"
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


def run_tool(tool: str, work: Path, db: Path, keap_side: Path, label: str) -> dict[str, Any]:
    copy = work / f"{label}.duckdb"
    shutil.copy(db, copy)
    with sandboxes(fresh_dir(work, keap_side, label), None, customcrm_limits="default") as boxes:
        boxes.reset_stats()
        if tool == "drt":
            with duckdb.connect(str(copy), read_only=True) as con:
                columns = [r[0] for r in con.execute("describe main.peer_customers").fetchall()]
            project = drt_project(work / label, copy, boxes, columns)
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
        digest = _customers_digest(boxes)
    return {
        "tool": tool,
        "seconds": round(seconds, 1),
        "customcrm_requests": crm["total"],
        "customcrm_429": crm["by_status"].get("429", 0),
        "keap_requests": keap["total"],
        "customers_created": held,
        "records_digest": digest,
    }


def _customers_digest(boxes: RunningSandboxes) -> str:
    """What the run left in Customcrm, but for what the API assigns (ids, versions, times)."""
    import hashlib

    import httpx

    assigned = {"Id", "Version", "CreatedAt", "UpdatedAt"}
    records, cursor = [], None
    with httpx.Client(base_url=boxes.customcrm_url, timeout=60,
                      headers={"Authorization": f"Bearer {boxes.customcrm_token}"}) as crm:  # fmt: skip
        while True:
            page = crm.get(
                "/customers", params={"limit": 500, **({"cursor": cursor} if cursor else {})}
            ).json()
            records += [{k: v for k, v in r.items() if k not in assigned} for r in page["data"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
    canonical = sorted(json.dumps(r, sort_keys=True) for r in records)
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:16]


def run(size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-peer-") as tmp:
        work = Path(tmp)
        db, keap_side = prepare(work, size)
        figures: dict[str, list[dict[str, Any]]] = {"drt": [], "reverse_etl": []}
        for number in range(rounds):
            order = ("drt", "reverse_etl") if number % 2 == 0 else ("reverse_etl", "drt")
            for tool in order:
                result = run_tool(tool, work, db, keap_side, f"{tool}-{number}")
                figures[tool].append(result)
                emit("peer", {"size": size, "round": number + 1, **result})
        best = {tool: min(r["seconds"] for r in runs) for tool, runs in figures.items()}
        emit("peer_summary", {
            "size": size, "rounds": rounds,
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
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    run(args.size, args.rounds)


if __name__ == "__main__":
    main()
