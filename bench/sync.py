"""Figures: API requests, wall time and peak memory of whole syncs, against what each
scenario needs.

    python -m bench.sync --size 10000                 # Keap at its published key limits
    python -m bench.sync --size 100000 --limits off   # request counts and local cost, unpaced
    python -m bench.sync --size 10000 --limits off --warehouse postgres   # the same on PostgreSQL

Each scenario is one `crmsync sync --json` in a process of its own (its wall time and
its own peak memory, read with wait4), against sandboxes in another process.
Scenarios: the initial sync (`size` per kind in Keap, the demo's 8% twins and 4% own
records in Customcrm), the run after it (it reads back what the first one wrote), a
quiet run (nothing changed since a run that found nothing to do), 1% of each kind
edited on each side, and the run after that.

For each: requests made, and two minimums. `minimum` is the issue's: reads of one page
per 1,000 Keap or 500 Customcrm records changed by users (at least one per resource
and Keap's stages), writes of one per Keap record changed and one per 100 Customcrm
operations. `minimum_with_echo` adds the pages that the records the sync itself wrote
take when they are read back (their update times are past the cursor, so any
incremental reader reads them once). The Keap floor is what its limits impose on the
requests made: a bucket of 240, then 4 a second.

`--warehouse postgres`: the sync's data in a PostgreSQL database (CRMSYNC_WAREHOUSE) of a
throwaway cluster on this machine (tests/postgres.py, as the tests start theirs); the
server's memory is not in the sync process's peak, so it is printed beside it
(`server_rss_mib`: the cluster's processes, summed, at the end of each scenario).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RunningSandboxes, emit, main_for, sandboxes
from support.warehouse import ENV
from support.warehouse import url as warehouse_url

KEAP = {"customers": "companies", "contacts": "contacts", "orders": "opportunities", "products": "products"}


def keap_floor_seconds(requests: int) -> float:
    return max(requests / 10, (requests - 240) / 4)


def read_pages(changed: dict[str, int], page: int) -> int:
    return sum(max(1, math.ceil(n / page)) for n in changed.values())


# `crmsync sync --json`, with the Keap client's own pacing lifted: Keap's per-second limit
# (10 for a key) has no header, so the client keeps it even against an unlimited sandbox
UNPACED = """
import json
import crmsync.cli  # noqa: F401  (what a real run imports)
from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from crmsync.run import Endpoints, run_sync
from crmsync.settings import Settings
settings = Settings.from_env()
found = Endpoints(
    keap=keap_client(base_url=settings.keap_api_url, api_key=settings.keap_api_key,
                     pacer=KeapPacer(per_second=1e6, per_minute=1e9)),
    customcrm=customcrm_client(base_url=settings.customcrm_api_url, token=settings.customcrm_api_token),
)
outcome = run_sync(settings, found)
found.close()
print(json.dumps(outcome.as_dict(), default=str))
"""


def sync_process(boxes: RunningSandboxes, db: Path, paced: bool = True) -> dict[str, Any]:
    """One `crmsync sync --json` in a process of its own (`paced` False: the Keap client's
    own pacing lifted too): its answer, wall time and peak resident memory. The warehouse
    is this process's CRMSYNC_WAREHOUSE, if any."""
    env = boxes.env(db)
    command = (
        [sys.executable, "-m", "crmsync.cli", "sync", "--json"] if paced else [sys.executable, "-c", UNPACED]
    )
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if not output.strip():
        return {"answer": {"status": f"exit {process.returncode}"}, "seconds": seconds, "peak_rss_mib": 0}
    # the CLI prints one indented document; the unpaced runner one line, after whatever
    # a library printed on stdout first
    answer = json.loads(output if paced else output.strip().splitlines()[-1])
    return {"answer": answer, "seconds": seconds, "peak_rss_mib": usage.ru_maxrss // 1024}


def written(db: Path, run_id: str) -> dict[str, dict[str, int]]:
    """What the run wrote, per target and mapping: Keap records, Customcrm operations."""
    from reverse_etl.state import connect

    with connect(db) as con:  # this process's dbt may still hold the file: same configuration
        rows = con.execute(
            """select target, mapping, count(distinct coalesce(keap_id, customcrm_id))
               from sync_state.operations
               where run_id = ? and op <> 'link' and status in ('ok', 'rejected')
               group by target, mapping""",
            [run_id],
        ).fetchall()
    found: dict[str, dict[str, int]] = {"keap": {}, "customcrm": {}}
    for target, mapping, count in rows:
        found[target][mapping] = count
    return found


def measure(
    name: str, size: int, boxes: RunningSandboxes, db: Path, changed: dict[str, dict[str, int]], paced: bool
) -> None:
    """`changed`: records users changed since the last run, per Keap resource (`keap`) and
    per Customcrm resource (`customcrm`). The writes the scenario needs are what the run
    recorded as written: one request per Keap record, one per 100 Customcrm operations."""
    boxes.reset_stats()
    run = sync_process(boxes, db, paced)
    keap = boxes.admin("keap", "/_sandbox/stats")
    crm = boxes.admin("customcrm", "/_sandbox/stats")
    answer = run["answer"]
    wrote = written(db, answer["run_id"]) if answer.get("run_id") else {"keap": {}, "customcrm": {}}
    minimum_keap = read_pages(changed["keap"], 1000) + 1 + sum(wrote["keap"].values())  # + 1: the stages
    minimum_crm = read_pages(changed["customcrm"], 500) + sum(
        math.ceil(n / 100) for n in wrote["customcrm"].values()
    )
    echo = sum(math.ceil(n / 1000) for n in wrote["keap"].values()) + sum(
        math.ceil(n / 500) for n in wrote["customcrm"].values()
    )
    minimum = minimum_keap + minimum_crm
    total = keap["total"] + crm["total"]
    emit("sync", {
        "size_per_kind": size, "scenario": name, "warehouse": "postgres" if warehouse_url() else "duckdb", "status": answer.get("status"), "rounds": answer.get("rounds"),
        "quiet_since": answer.get("quiet_since"),
        "seconds": round(run["seconds"], 1), "phases": answer.get("seconds"), "peak_rss_mib": run["peak_rss_mib"],
        "keap_requests": keap["total"], "keap_writes": keap["writes"],
        "customcrm_requests": crm["total"], "customcrm_writes": crm["writes"],
        "minimum_keap": minimum_keap, "minimum_customcrm": minimum_crm,
        "minimum": minimum, "ratio": round(total / max(1, minimum), 2),
        "minimum_with_echo": minimum + echo, "ratio_with_echo": round(total / max(1, minimum + echo), 2),
        "keap_floor_seconds": keap_floor_seconds(keap["total"]),
        "keap_429": keap["by_status"].get("429", 0), "customcrm_429": crm["by_status"].get("429", 0),
        **({"server_rss_mib": server_rss_mib()} if warehouse_url() else {}),
    })  # fmt: skip


def edit_one_percent(boxes: RunningSandboxes, size: int, seed: int, limits: str) -> int:
    """1% of each kind edited in Keap and another 1% (of the linked records) in Customcrm,
    limits lifted meanwhile; returns the number per kind and side."""
    rng = random.Random(seed)
    boxes.admin("keap", "/_sandbox/config", {"limits": "off"})
    boxes.admin("customcrm", "/_sandbox/config", {"limits": "off"})
    n = max(1, size // 100)
    keap = httpx.Client(base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap_key}, timeout=60)
    crm = httpx.Client(
        base_url=boxes.customcrm_url, headers={"Authorization": f"Bearer {boxes.customcrm_token}"}, timeout=60
    )
    first = {"companies": 2001, "contacts": 1001, "opportunities": 3001, "products": 4001}
    field = {"companies": "notes", "contacts": "job_title", "opportunities": "opportunity_notes",
             "products": "description"}  # fmt: skip
    for resource, start in first.items():
        for record_id in rng.sample(range(start, start + size), n):
            keap.patch(f"/{resource}/{record_id}", params={"update_mask": field[resource]},
                       json={field[resource]: f"keap edit {seed}"})  # fmt: skip
    crm_field = {"customers": "Description", "contacts": "Title", "orders": "Description",
                 "products": "Description"}  # fmt: skip
    for resource, prop in crm_field.items():
        linked: list[str] = []
        cursor = None
        while len(linked) < 20 * n:  # a sample from the first pages is enough
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = crm.get(f"/{resource}", params=params).json()
            linked += [r["Id"] for r in page["data"] if r["ExternalRefs"].get("keap")]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        chosen = rng.sample(linked, min(n, len(linked)))
        for start in range(0, len(chosen), 100):
            operations = [{"op": "update", "id": i, "data": {prop: f"customcrm edit {seed}"}}
                          for i in chosen[start : start + 100]]  # fmt: skip
            crm.post(f"/{resource}/batch", json={"operations": operations}).raise_for_status()
    keap.close()
    crm.close()
    restore(boxes, limits)
    return n


def restore(boxes: RunningSandboxes, limits: str) -> None:
    boxes.admin("keap", "/_sandbox/config", {"limits": "published" if limits == "published" else "off"})
    boxes.admin("customcrm", "/_sandbox/config", {"limits": "default" if limits == "published" else "off"})


def server_rss_mib() -> int:
    """The resident memory of the PostgreSQL server's processes, summed (shared buffers
    counted once per process that touched them: an upper bound)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if "\nName:\tpostgres" in "\n" + text:
            total += next(
                (int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0
            )
    return total // 1024


def run(size: int, limits: str = "published", keep: Path | None = None, warehouse: str = "duckdb") -> None:
    if warehouse == "postgres":
        from tests.postgres import cluster, create_database

        with cluster() as url:
            os.environ[ENV] = create_database(url)
            try:
                _run(size, limits, keep)
            finally:
                del os.environ[ENV]
        return
    _run(size, limits, keep)


def _run(size: int, limits: str, keep: Path | None) -> None:
    nothing = {"keap": {r: 0 for r in KEAP.values()}, "customcrm": {m: 0 for m in KEAP}}
    paced = limits == "published"
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        db = work / "bench.duckdb"
        keap_limits, crm_limits = ("published", "default") if paced else ("off", "off")
        with sandboxes(work / "sandbox", size, keap_limits=keap_limits, customcrm_limits=crm_limits) as boxes:
            crm_records = {m: c["live"] for m, c in boxes.admin("customcrm", "/_sandbox/counts").items()}
            everything = {"keap": {r: size for r in KEAP.values()}, "customcrm": crm_records}
            measure("initial sync", size, boxes, db, everything, paced)
            measure("the run after it", size, boxes, db, nothing, paced)
            if (
                keep is not None and not warehouse_url()
            ):  # a synced account of this size, settled: what bench.dbt_incremental starts from
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy2(db, keep / f"synced-{size}.duckdb")
            if size <= 10_000:  # the run after a writing run is already quiet; at 10,000 once more to show it
                measure("quiet: nothing changed", size, boxes, db, nothing, paced)
            n = edit_one_percent(boxes, size, seed=1, limits=limits)
            edits = {"keap": {r: n for r in KEAP.values()}, "customcrm": {m: n for m in KEAP}}
            measure("1% edited on each side", size, boxes, db, edits, paced)
            measure("the run after the edits", size, boxes, db, nothing, paced)


def main() -> None:
    main_for(run, __doc__, limits={"choices": ["published", "off"], "default": "published"},
             keep={"type": Path, "help": "keep the DuckDB file of the synced account here"},
             warehouse={"choices": ["duckdb", "postgres"], "default": "duckdb",
                        "help": "where the sync keeps its data (postgres: a throwaway local cluster)"})  # fmt: skip


if __name__ == "__main__":
    main()
