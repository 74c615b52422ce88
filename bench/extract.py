"""Figures: requests and time of a full and of an idle extract, per size; and what the
walk by id (each page a fresh query: Keap may page by position) costs against following
Keap's page tokens, resource by resource, on the same data.

    python -m bench.extract --size 10000 [--size 100000]

The sandboxes run in their own process with limits off (this measures the
sync's own cost); the floor Keap's published key limit (240 requests a
minute) would impose on the same requests is printed beside it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Timer, emit, main_for, peak_rss_mib, sandboxes
from connectors.customcrm import customcrm_client
from connectors.keap import KeapClient, KeapPacer, keap_client
from pipelines.ingest import extract
from pipelines.keap.settings import RESOURCES

KEAP_PER_MINUTE = 240


def run(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        with sandboxes(work / "sandbox", size) as boxes:
            keap = keap_client(
                base_url=boxes.keap_url,
                api_key=boxes.keap_key,
                pacer=KeapPacer(per_second=1e6, per_minute=1e9),
            )
            crm = customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm_token)
            db, state = work / "bench.duckdb", work / "bench.state"
            for label in ("full", "idle"):
                boxes.reset_stats()
                with Timer() as timer:
                    reports = extract(db, state, keap, crm)
                keap_served = boxes.admin("keap", "/_sandbox/stats")
                crm_served = boxes.admin("customcrm", "/_sandbox/stats")
                records = {f"{r.system}.{n}": c.records for r in reports for n, c in r.resources.items()}
                emit(
                    "extract",
                    {
                        "size_per_kind": size,
                        "run": label,
                        "seconds": round(timer.seconds, 2),
                        "keap_requests": keap_served["total"],
                        "customcrm_requests": crm_served["total"],
                        "keap_floor_seconds_at_240_per_min": round(
                            keap_served["total"] / KEAP_PER_MINUTE * 60, 1
                        ),
                        "records_loaded": sum(records.values()),
                        "peak_rss_mib": round(peak_rss_mib()),
                    },
                )
            walks(keap, boxes, size)


def walks(keap: KeapClient, boxes: object, size: int) -> None:
    """The initial read of each Keap resource both ways: following page tokens (what the
    sync did before, and what trusts positions) and by id (what it does now)."""
    for spec in RESOURCES:
        fields = list(spec.list_fields) or None
        params = {"fields": ",".join(fields)} if fields and spec.narrowable else {}
        figures: dict[str, object] = {"size_per_kind": size, "resource": spec.name}
        pages: dict[str, Iterator[Any]] = {
            "page_tokens": keap.token_walk(spec.name, params),  # generators: nothing is read yet
            "by_id": keap.walk(spec.name, None, fields),
        }
        for label, read in pages.items():
            before = keap.stats.requests
            with Timer() as timer:
                records = sum(len(page.items) for page in read)
            figures[f"{label}_requests"] = keap.stats.requests - before
            figures[f"{label}_seconds"] = round(timer.seconds, 2)
            figures[f"{label}_records"] = records
        emit("keap_walk", figures)


def main() -> None:
    main_for(run, __doc__)


if __name__ == "__main__":
    main()
