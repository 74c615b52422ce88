"""Figure: time and peak memory of `dbt build` on data loaded by the ingest.

    python -m bench.dbt_build --size 10000 [--size 100000]

Sandboxes seeded with `size` records per kind on each side (every Keap record has a
Customcrm twin, orders aside: they have no natural key), extracted, then a
whole `dbt build` (seeds, models, tests, unit tests) in a fresh process whose peak
memory is read from the OS (children's maxrss), twice: the first build of a new
file, and a rebuild.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit, main_for, sandboxes
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


def build_in_child(db: Path) -> dict[str, object]:
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", BUILD, str(db)], capture_output=True, text=True,
                              env={**os.environ}, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    return {**report, "process_seconds": round(wall, 1)}


def run(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        db = work / "bench.duckdb"
        with sandboxes(work / "sandbox", size, customcrm_share=1.0) as boxes:  # full on both sides
            keap = keap_client(base_url=boxes.keap_url, api_key=boxes.keap_key,
                               pacer=KeapPacer(per_second=1e6, per_minute=1e9))  # fmt: skip
            crm = customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token)
            extract(db, work / "bench.state", keap, crm)
        ensure_state(db)
        for label in ("first build", "rebuild"):
            figures = build_in_child(db)
            emit("dbt_build", {"size_per_kind": size, "run": label, "seconds": round(float(figures["seconds"]), 1),
                               "process_seconds": figures["process_seconds"], "peak_rss_mib": figures["peak_rss_mib"],
                               "ok": figures["ok"], "failures": figures["failures"]})  # fmt: skip


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
