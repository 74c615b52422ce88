"""Figures: API requests and wall time of whole syncs, against what each scenario needs.

    python -m bench.sync --size 10000

The Keap sandbox runs at Keap's published key limits (10/s, 240/min), Customcrm at its
default (20/s, burst 40). Scenarios: the initial sync, an idle sync, 1% of each kind
edited on each side. For each: requests made, the minimum the scenario needs (reads:
one page per 1,000 Keap or 500 Customcrm records changed, at least one per resource;
writes: one per Keap record changed, one per 100 Customcrm operations), and the floor
Keap's limits put under the wall time (a bucket of 240 then 4 a second).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import RunningSandboxes, emit, main_for, sandboxes
from connectors.customcrm import customcrm_client
from connectors.keap import keap_client
from crmsync.run import Endpoints, run_sync
from crmsync.settings import Settings

KEAP = {"customers": "companies", "contacts": "contacts", "orders": "opportunities", "products": "products"}


def keap_floor_seconds(requests: int) -> float:
    return max(0.0, requests - 240) / 4


def minimum(changes_keap: dict[str, int], changes_crm: dict[str, int], writes_keap: int,
            writes_crm: dict[str, int]) -> dict[str, int]:  # fmt: skip
    keap_reads = sum(max(1, math.ceil(n / 1000)) for n in changes_keap.values())
    crm_reads = sum(max(1, math.ceil(n / 500)) for n in changes_crm.values())
    crm_writes = sum(math.ceil(n / 100) for n in writes_crm.values())
    return {"keap": keap_reads + writes_keap, "customcrm": crm_reads + crm_writes}


def measure(
    name: str, size: int, boxes: RunningSandboxes, settings: Settings, expected: dict[str, int]
) -> None:
    boxes.reset_stats()
    found = Endpoints(keap=keap_client(base_url=boxes.keap_url, api_key=boxes.keap_key),
                      customcrm=customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token))  # fmt: skip
    started = time.perf_counter()
    outcome = run_sync(settings, found)
    seconds = time.perf_counter() - started
    found.close()
    keap = boxes.admin("keap", "/_sandbox/stats")
    crm = boxes.admin("customcrm", "/_sandbox/stats")
    emit("sync", {
        "size_per_kind": size, "scenario": name, "status": outcome.status, "rounds": outcome.rounds,
        "seconds": round(seconds, 1), "keap_requests": keap["total"], "keap_writes": keap["writes"],
        "customcrm_requests": crm["total"], "customcrm_writes": crm["writes"],
        "minimum_keap": expected["keap"], "minimum_customcrm": expected["customcrm"],
        "ratio": round((keap["total"] + crm["total"]) / max(1, expected["keap"] + expected["customcrm"]), 2),
        "keap_floor_seconds": keap_floor_seconds(keap["total"]),
        "keap_429": keap["by_status"].get("429", 0), "customcrm_429": crm["by_status"].get("429", 0),
    })  # fmt: skip


def edit_one_percent(boxes: RunningSandboxes, size: int, seed: int) -> tuple[int, int]:
    """1% of each kind edited in Keap and another 1% in Customcrm (limits lifted meanwhile)."""
    rng = random.Random(seed)
    boxes.admin("keap", "/_sandbox/config", {"limits": "off"})
    boxes.admin("customcrm", "/_sandbox/config", {"limits": "off"})
    n = max(1, size // 100)
    keap = httpx.Client(base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap_key})
    crm = httpx.Client(
        base_url=boxes.customcrm_url, headers={"Authorization": f"Bearer {boxes.customcrm_token}"}
    )
    first = {"companies": 2001, "contacts": 1001, "opportunities": 3001, "products": 4001}
    field = {
        "companies": "notes",
        "contacts": "job_title",
        "opportunities": "opportunity_notes",
        "products": "description",
    }
    for resource, start in first.items():
        for record_id in rng.sample(range(start, start + size), n):
            keap.patch(f"/{resource}/{record_id}", params={"update_mask": field[resource]},
                       json={field[resource]: f"keap edit {seed}"})  # fmt: skip
    crm_field = {
        "customers": "Description",
        "contacts": "Title",
        "orders": "Description",
        "products": "Description",
    }
    for resource, prop in crm_field.items():
        records = [r for r in crm.get(f"/{resource}", params={"limit": 500}).json()["data"]
                   if r["ExternalRefs"].get("keap")]  # fmt: skip
        for record in rng.sample(records, min(n, len(records))):
            crm.patch(f"/{resource}/{record['Id']}", json={prop: f"customcrm edit {seed}"})
    boxes.admin("keap", "/_sandbox/config", {"limits": "published"})
    boxes.admin("customcrm", "/_sandbox/config", {"limits": "default"})
    return n, min(n, 500)


def run(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        settings = Settings(db_path=work / "bench.duckdb", keap_configured=True, customcrm_configured=True)
        with sandboxes(work / "sandbox", size, keap_limits="published", customcrm_limits="default") as boxes:
            crm_records = {m: c["live"] for m, c in boxes.admin("customcrm", "/_sandbox/counts").items()}
            creates = {m: size - max(3, size * 8 // 100) for m in KEAP}
            measure(
                "initial",
                size,
                boxes,
                settings,
                minimum({r: size for r in KEAP.values()}, crm_records, writes_keap=0, writes_crm=creates),
            )
            measure(
                "idle",
                size,
                boxes,
                settings,
                minimum({r: 0 for r in KEAP.values()}, {m: 0 for m in KEAP}, 0, {m: 0 for m in KEAP}),
            )
            keap_edits, crm_edits = edit_one_percent(boxes, size, seed=1)
            measure(
                "1% edited on each side",
                size,
                boxes,
                settings,
                minimum(
                    {r: keap_edits for r in KEAP.values()},
                    {m: crm_edits for m in KEAP},
                    writes_keap=4 * crm_edits,
                    writes_crm={m: keap_edits for m in KEAP},
                ),
            )


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
