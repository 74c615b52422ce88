"""Figure: time and peak memory of `dbt build` on data loaded by the ingest.

    python -m bench.dbt_build --size 10000 [--size 100000]
    python -m bench.dbt_build --size 100000 --replicate 10     # 1,000,000 per kind per side

Sandboxes seeded with `size` records per kind on each side (every Keap record has a
Customcrm twin, orders aside: they have no natural key), extracted, then a
whole `dbt build` (seeds, models, tests, unit tests) in a fresh process whose peak
memory is read from the OS (children's maxrss), twice: the first build of a new
file, and a rebuild.

`--replicate N` multiplies what the ingest loaded N times inside DuckDB before building:
each copy re-keyed consistently on both sides (Keap ids, Customcrm ids, ExternalRefs,
emails, names and SKUs get a copy marker; Keap's stages stay shared), so the copies link
among themselves exactly as the original does. Serving and extracting 8,000,000 records
through the sandboxes' HTTP APIs would take the better part of an hour on this machine
(about 4,000 records a second); the build does not care how the raw rows arrived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, sandboxes
from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from pipelines.ingest import extract
from reverse_etl.state import ensure_state

# the build runs alone in its own process, which reports its own peak memory
BUILD = """
import json, resource, sys, time
from pathlib import Path
from crmsync.dbt import run_dbt
started = time.perf_counter()
result = run_dbt(["build"], Path(sys.argv[1]))
print(json.dumps({"ok": result.success, "seconds": time.perf_counter() - started, "failures": result.failures[:3],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def run_results(db: Path) -> list[dict[str, Any]]:
    """The last build's nodes, from dbt's run_results.json."""
    from crmsync.dbt import target_dir

    return json.loads((target_dir(db) / "run_results.json").read_text())["results"]  # type: ignore[no-any-return]


def slowest_nodes(results: list[dict[str, Any]], count: int = 6) -> list[str]:
    """The build's slowest nodes (`run_results`), each by its name."""
    ranked = sorted(results, key=lambda r: r.get("execution_time") or 0, reverse=True)[:count]
    return [f"{r['unique_id'].split('.')[2]} {r['execution_time']:.1f}s" for r in ranked]


def node_seconds(results: list[dict[str, Any]]) -> dict[str, float]:
    """The build's nodes' summed seconds per kind (model, test, seed): with two dbt
    threads their sum exceeds the wall time."""
    totals: dict[str, float] = {}
    for result in results:
        kind = result["unique_id"].split(".")[0]
        totals[kind] = totals.get(kind, 0.0) + (result.get("execution_time") or 0.0)
    return {kind: round(seconds, 1) for kind, seconds in totals.items()}


def build_in_child(db: Path) -> dict[str, Any]:
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", BUILD, str(db)], capture_output=True, text=True,
                              env={**os.environ}, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    return {**report, "process_seconds": round(wall, 1)}


# (pattern, replacement) applied in order to a copy's payload; {k} is the copy's number
RE_KEY = [
    (r'"stage":\{"id":"(\d+)","name":"', r'"stage":{"sid":"\1","sname":"'),  # shared: not re-keyed
    (r'"id":"(\d+)"', r'"id":"{k}000\1"'),
    (r'"keap":"(\d+)"', r'"keap":"{k}000\1"'),
    (r'"(Id|CustomerId|ContactId)":"([a-z]+)_', r'"\1":"\2_R{k}'),
    (r'"([Ee]mail)":"', r'"\1":"r{k}.'),
    (r'"(company_name|name|Name)":"', r'"\1":"R{k} '),
    (r'"([Ss]ku)":"', r'"\1":"R{k}-'),
    (r'"stage":\{"sid":"(\d+)","sname":"', r'"stage":{"id":"\1","name":"'),
]


def replicate(db: Path, factor: int) -> int:
    """Each raw record table `factor` times as large; returns the rows per table after."""
    import duckdb

    with duckdb.connect(str(db)) as con:
        tables = con.execute(
            """select table_schema, table_name from information_schema.tables
               where table_schema in ('raw_keap', 'raw_customcrm') and table_name in
                   ('companies', 'contacts', 'opportunities', 'products', 'customers', 'orders')"""
        ).fetchall()
        for schema, table in tables:
            con.execute(f"create temp table original as select * from {schema}.{table}")
            for k in range(1, factor):
                payload = "payload"
                for pattern, replacement in RE_KEY:
                    marked = replacement.replace("{k}", str(k))
                    payload = f"regexp_replace({payload}, '{pattern}', '{marked}', 'g')"
                key = (
                    f"'{k}000' || id"
                    if schema == "raw_keap"
                    else f"regexp_replace(id, '^([a-z]+)_', '\\1_R{k}')"
                )
                con.execute(
                    f"""insert into {schema}.{table}
                        select {key}, updated_at, _cursor, {payload}, _extracted_at, _dlt_load_id, _dlt_id || '-{k}'
                        from original"""
                )
            con.execute("drop table original")
        con.execute("checkpoint")
        return con.execute("select count(*) from raw_keap.contacts").fetchone()[0]  # type: ignore[index]


def run(size: int, factor: int = 1) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        db = work / "bench.duckdb"
        with sandboxes(work / "sandbox", size, customcrm_share=1.0) as boxes:  # full on both sides
            keap = keap_client(base_url=boxes.keap_url, api_key=boxes.keap_key,
                               pacer=KeapPacer(per_second=1e6, per_minute=1e9))  # fmt: skip
            crm = customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token)
            extract(db, work / "bench.state", keap, crm)
        ensure_state(db)
        per_kind = replicate(db, factor) if factor > 1 else size
        for label in (
            ("first build",) if factor > 1 else ("first build", "rebuild")
        ):  # 1,000,000: one is enough
            figures = build_in_child(db)
            emit("dbt_build", {
                "size_per_kind": per_kind, "replicated_from": size if factor > 1 else None, "run": label,
                "seconds": round(float(figures["seconds"]), 1), "process_seconds": figures["process_seconds"],
                "peak_rss_mib": figures["peak_rss_mib"], "ok": figures["ok"], "failures": figures["failures"],
                "slowest": slowest_nodes(run_results(db)),
            })  # fmt: skip


def main() -> None:
    import argparse

    from bench.common import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, action="append", help="records per kind, per side (repeatable)")
    parser.add_argument(
        "--replicate", type=int, default=1, help="multiply the loaded records this many times"
    )
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    for size in args.size or [10_000]:
        run(size, args.replicate)


if __name__ == "__main__":
    main()
