"""The ingest step: both sources loaded into the DuckDB file, one raw dataset per system.

dlt keeps its working folder in the state folder beside the DuckDB file
(`<db>.state/dlt`), so the DuckDB file and that folder are the whole state;
dlt also keeps its pipeline state inside the DuckDB file and restores it when
the folder is gone. The two pipelines run one after the other: DuckDB takes
one writer at a time, and dlt closes its connection when a load ends.

The records are personal data: they belong in the DuckDB file only. dlt writes each
run's records to load files in its working folder first, and keeps the packages it
loaded; here the load files go as soon as their load completed
(`LOAD__DELETE_COMPLETED_JOBS`) and the loaded packages after the run, so nothing of the
records stays in the state folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import TLoaderFileFormat
from dlt.pipeline.exceptions import PipelineStepFailed

from connectors.customcrm import CustomcrmClient
from connectors.errors import FatalError, ProtocolError
from connectors.keap import KeapClient
from pipelines.common import ExtractReport, ProgressCallback
from pipelines.customcrm import customcrm_source
from pipelines.keap import keap_source
from support.warehouse import PREFIX_ENV

KEAP_DATASET = "raw_keap"
CUSTOMCRM_DATASET = "raw_customcrm"


@dataclass(frozen=True)
class IngestOptions:
    full_pass: bool = False  # Keap: list every id now and mark what is gone
    full_pass_every: int = 24  # ... and on this schedule, in runs
    overlap: timedelta = timedelta(seconds=2)  # Keap: re-read this much before the cursor
    # Customcrm: the same, for records stamped when their transaction began and visible
    # only once it committed (what was already loaded at the same UpdatedAt is skipped)
    customcrm_overlap: timedelta = timedelta(seconds=5)
    # Keap: ids that REST hooks said were deleted, per resource (hints, never data): each is
    # confirmed by a direct read answering 404 before it is recorded, as the full pass does
    deletion_hints: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # False: this run does not count toward `full_pass_every` (runs triggered by hooks, so
    # the full pass keeps the schedule of the scheduled runs)
    counts_toward_full_pass: bool = True


def _destination(db_path: Path, warehouse: str | None) -> Any:
    """The DuckDB file; or, with `warehouse` (a postgresql:// URL), that PostgreSQL database."""
    if warehouse is None:
        return dlt.destinations.duckdb(str(db_path))
    return dlt.destinations.postgres(credentials=warehouse)


# what dlt writes its load files as: jsonl for DuckDB (see _load); PostgreSQL takes no jsonl,
# and csv goes in by COPY, where dlt's default, INSERT statements, would go row by row
LOADER_FORMAT: dict[str, TLoaderFileFormat] = {"duckdb": "jsonl", "postgres": "csv"}


def _pipeline(
    name: str, db_path: Path, state_dir: Path, dataset: str, warehouse: str | None = None
) -> dlt.Pipeline:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ["DLT_DATA_DIR"] = str(state_dir / "dlt")  # not the home directory
    # merges go through raw_*_staging; without this those tables keep the last load, which
    # after a full extract is a second copy of every record in the file
    os.environ.setdefault("LOAD__TRUNCATE_STAGING_DATASET", "true")
    os.environ["LOAD__DELETE_COMPLETED_JOBS"] = "true"  # the records' load files, once loaded
    # the extract and normalize files live for seconds on local disk: gzip spent about 5% of
    # a first sync's CPU on them (bench/RESULTS.md, issue 17)
    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=name,
        pipelines_dir=str(state_dir / "dlt" / "pipelines"),
        destination=_destination(db_path, warehouse),
        # on PostgreSQL, a plan's scratch copy of the schemas (support.warehouse.prefix)
        dataset_name=(os.environ.get(PREFIX_ENV, "") if warehouse else "") + dataset,
    )


def _load(pipeline: dlt.Pipeline, source: object, report: ExtractReport) -> None:
    # jsonl load files, not dlt's default INSERT statements for DuckDB: at 10,000
    # records per kind this cuts the peak memory from 1.2 GB to 0.33 GB (bench/RESULTS.md)
    try:
        info = pipeline.run(source, loader_file_format=LOADER_FORMAT[pipeline.destination.destination_name])
    except PipelineStepFailed as exc:  # a refused credential stops the run with its own one line
        fatal = _fatal_cause(exc)
        if fatal is None:
            raise
        raise fatal from exc
    if info.has_failed_jobs:
        failed = [job.failed_message for package in info.load_packages for job in package.jobs["failed_jobs"]]
        raise ProtocolError(
            f"{report.system}: the load into DuckDB failed: {failed[:3]}", system=report.system
        )
    for package in info.load_packages:  # loaded: only dlt's bookkeeping is left in it, not needed again
        if package.state == "loaded":
            shutil.rmtree(package.package_path, ignore_errors=True)


def _fatal_cause(error: BaseException | None) -> FatalError | None:
    """The FatalError (credentials, the token endpoint) dlt wrapped, if that is what stopped it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, FatalError):
            return error
        seen.add(id(error))
        error = getattr(error, "exception", None) or error.__cause__ or error.__context__
    return None


def extract(
    db_path: Path,
    state_dir: Path,
    keap: KeapClient,
    customcrm: CustomcrmClient,
    options: IngestOptions | None = None,
    progress: ProgressCallback | None = None,
    warehouse: str | None = None,
) -> list[ExtractReport]:
    """Read what changed in both systems and merge it into the raw datasets: in the DuckDB
    file, or (`warehouse`, a postgresql:// URL) in that PostgreSQL database's schemas of
    the same names (with a tenant's or a plan's prefix: support.warehouse.prefix)."""
    options = options or IngestOptions()
    reports = []
    keap_report = ExtractReport("keap")
    source = keap_source(
        keap,
        keap_report,
        overlap=options.overlap,
        full_pass=options.full_pass,
        full_pass_every=options.full_pass_every,
        deletion_hints=options.deletion_hints,
        count_run=options.counts_toward_full_pass,
        progress=progress,
    )
    before = keap.stats.requests, keap.stats.retries, keap.stats.rate_limited
    _load(_pipeline("crmsync_keap", db_path, state_dir, KEAP_DATASET, warehouse), source, keap_report)
    keap_report.requests = keap.stats.requests - before[0]
    keap_report.retries = keap.stats.retries - before[1]
    keap_report.rate_limited = keap.stats.rate_limited - before[2]
    reports.append(keap_report)

    crm_report = ExtractReport("customcrm")
    source = customcrm_source(customcrm, crm_report, overlap=options.customcrm_overlap, progress=progress)
    before = customcrm.stats.requests, customcrm.stats.retries, customcrm.stats.rate_limited
    _load(
        _pipeline("crmsync_customcrm", db_path, state_dir, CUSTOMCRM_DATASET, warehouse), source, crm_report
    )
    crm_report.requests = customcrm.stats.requests - before[0]
    crm_report.retries = customcrm.stats.retries - before[1]
    crm_report.rate_limited = customcrm.stats.rate_limited - before[2]
    reports.append(crm_report)
    return reports
