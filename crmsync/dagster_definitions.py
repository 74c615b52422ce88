"""Dagster definitions for those who schedule with Dagster (the `dagster` extra):

    pip install -e '.[dagster]'
    CRMSYNC_TENANTS=/srv/crmsync/tenants.toml dagster dev -m crmsync.dagster_definitions

One asset, `crmsync_sync`, partitioned by tenant (the tenants file's, read when the
definitions load): materializing a partition is that tenant's `crmsync sync --tenant
NAME --json`, in a process of its own, as `crmsync sync --all-tenants` runs it. The
asset's metadata is the run's outcome (run id, status, exit code, seconds, what each
mapping saw, refused rows). Exit 0 and 3 (some rows refused: listed, the rest written)
materialize it; 1 (failed) and 4 (a resource could not be read or written) fail the step
with the tenant's own one line, so that Dagster's retries and alerts apply. A schedule
asks for every tenant every 15 minutes (off until turned on, as Dagster's schedules are).

Nothing else in crmsync imports this module: the core runs without Dagster.
"""

# no `from __future__ import annotations`: Dagster reads the context's annotation as a type
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from crmsync.tenant_runs import TenantRun, others_variables, sync_tenant
from crmsync.tenants import load, tenants_file

FAILED = {1: "failed", 4: "incomplete"}


def _metadata(run: TenantRun) -> dict[str, Any]:
    result = run.result or {}
    return {
        "tenant": run.tenant,
        "run_id": str(result.get("run_id") or ""),
        "status": str(result.get("status") or "failed"),
        "exit_code": run.exit_code,
        "seconds": round(run.seconds, 1),
        "mappings": dg.MetadataValue.json(result.get("mappings") or {}),
        "rejections": len(result.get("rejections") or []),
        "conflicts": len(result.get("conflicts") or []),
    }


def definitions() -> dg.Definitions:
    """The asset, its job and its schedule, for the tenants of CRMSYNC_TENANTS (or
    tenants.toml) as it reads now."""
    found = load()
    tenants = dg.StaticPartitionsDefinition(list(found))

    @dg.asset(
        partitions_def=tenants,
        group_name="crmsync",
        description=f"The tenant's Keap and Customcrm kept in sync: `crmsync sync --tenant` ({tenants_file()}).",
        kinds={"python", "duckdb"},
    )
    def crmsync_sync(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        tenant = found[context.partition_key]
        run = sync_tenant(tenant.name, [], others_variables(found.values(), tenant))
        metadata = _metadata(run)
        if run.exit_code not in (0, 3):  # 1 failed, 4 incomplete (and anything unforeseen)
            raise dg.Failure(
                description=f"tenant {run.tenant}: {FAILED.get(run.exit_code, 'failed')} "
                f"(exit {run.exit_code}): {run.error}",
                metadata=metadata,
            )
        if run.exit_code == 3:
            context.log.warning(
                f"tenant {run.tenant}: some rows were refused: `crmsync rejections --tenant {run.tenant}`"
            )
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job("crmsync_sync_job", selection=[crmsync_sync])  # partitioned as the asset

    @dg.schedule(cron_schedule="*/15 * * * *", job=job, default_status=dg.DefaultScheduleStatus.STOPPED)
    def every_tenant_every_15_minutes(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        when = context.scheduled_execution_time or datetime.now(UTC)
        # a key per tenant and tick: a tick evaluated twice asks for each tenant's run once
        return [dg.RunRequest(partition_key=name, run_key=f"{name}@{when:%Y-%m-%dT%H:%MZ}")
                for name in tenants.get_partition_keys()]  # fmt: skip

    return dg.Definitions(assets=[crmsync_sync], jobs=[job], schedules=[every_tenant_every_15_minutes])


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev -m crmsync.dagster_definitions` loads: the tenants file is read then,
    not when the module is imported."""
    return definitions()
