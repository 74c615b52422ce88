"""`crmsync sync --all-tenants`: one `crmsync sync --tenant NAME` process per tenant, at most
`parallel` at once. A process of its own per tenant, because dbt runs in-process and keeps
process-wide state (its flags, dbt-duckdb's one connection), and because one tenant's
failure (a refused key, a full disk, a crash) then cannot stop the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from crmsync.tenants import Tenant

# worst first: a failure, then a resource not read or written, then refused rows
SEVERITY = (1, 4, 3)


@dataclass
class TenantRun:
    tenant: str
    exit_code: int
    seconds: float
    result: dict[str, Any] | None  # the tenant's `crmsync sync --json` document
    stderr: list[str]

    @property
    def error(self) -> str | None:
        """What failed, in one line (the tenant's own), when it did."""
        if self.result and self.result.get("error"):
            return str(self.result["error"])
        if self.exit_code == 0:
            return None if self.result else "crmsync sync ended without its result (exit 0)"
        lines = [line.removeprefix("crmsync: ") for line in self.stderr if line.strip()]
        return lines[-1] if lines else f"crmsync sync exited {self.exit_code} without a word"

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "exit_code": self.exit_code, "seconds": round(self.seconds, 1),
                "error": self.error, "result": self.result}  # fmt: skip


def overall_exit(runs: Sequence[TenantRun]) -> int:
    """1 when a tenant failed; else 4 when one was incomplete; else 3 when one had rows
    refused; else 0."""
    codes = {run.exit_code for run in runs}
    for code in SEVERITY:
        if code in codes:
            return code
    return 1 if codes - {0} else 0


_RUNNING: set[subprocess.Popen[str]] = set()
_RUNNING_LOCK = threading.Lock()


def sync_tenant(name: str, arguments: Sequence[str], others: Iterable[str] = ()) -> TenantRun:
    """`crmsync sync --tenant NAME --json` in a process of its own; `others`: environment
    variables that hold other tenants' secrets, left out of its environment."""
    started = time.monotonic()
    left_out = set(others)
    env = {key: value for key, value in os.environ.items() if key not in left_out}
    with subprocess.Popen([sys.executable, "-m", "crmsync.cli", "sync", "--tenant", name, "--json", *arguments],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:  # fmt: skip
        with _RUNNING_LOCK:
            _RUNNING.add(process)
        try:
            stdout, stderr = process.communicate()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(process)
    try:
        result = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        result = None
    return TenantRun(name, process.returncode, time.monotonic() - started, result, stderr.splitlines())


def others_variables(tenants: Iterable[Tenant], tenant: Tenant) -> set[str]:
    """The environment variables that hold the other tenants' secrets and not this one's:
    what its process is started without."""
    return (
        set().union(*(other.variables for other in tenants if other.name != tenant.name)) - tenant.variables
    )


def stop_all() -> None:
    """Stop every tenant's sync still running (the parent was told to stop): each ends as a
    sync stopped by SIGTERM does, and its next run closes its row as interrupted."""
    with _RUNNING_LOCK:
        for process in _RUNNING:
            process.terminate()


def sync_all(
    tenants: Sequence[Tenant],
    arguments: Sequence[str],
    parallel: int,
    on_done: Callable[[TenantRun], None],
) -> list[TenantRun]:
    """Every tenant's sync, `parallel` at a time; `on_done` hears each as it ends (one at a
    time); the runs come back in the file's order."""
    heard = threading.Lock()

    def one(tenant: Tenant) -> TenantRun:
        run = sync_tenant(tenant.name, arguments, others_variables(tenants, tenant))
        with heard:
            on_done(run)
        return run

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="tenant") as pool:
        return list(pool.map(one, tenants))


VIEWS_SCHEMA = "all_tenants"


def tenant_views(tenants: Sequence[Tenant], env: dict[str, str] | None = None) -> list[str]:
    """On each PostgreSQL warehouse that tenants share, a view per table of their marts in
    schema `all_tenants` (`all_tenants.link_contacts`: the tenant's name, then the columns
    all of them have, in the first one's order) across the tenants whose marts exist:
    what analysts query all tenants by, in the warehouse itself. Re-created after each
    `sync --all-tenants`, in one transaction per warehouse. Returns one line per warehouse
    and table set: what was made, or why not."""
    from crmsync.settings import ConfigurationError
    from crmsync.tenants import referenced
    from support import warehouse

    by_url: dict[str, list[Tenant]] = {}
    lines: list[str] = []
    for tenant in tenants:
        if tenant.schema_prefix is None:
            continue
        try:
            found = tenant.environment(
                referenced(env if env is not None else dict(os.environ)), secrets=False
            )
        except ConfigurationError as exc:
            lines.append(f"{tenant.name}: left out of the {VIEWS_SCHEMA} views: {exc}")
            continue
        by_url.setdefault(found["CRMSYNC_WAREHOUSE"], []).append(tenant)
    for url, members in by_url.items():
        where = warehouse.parts(url)
        try:
            lines.append(_views(url, members) + f" on {where['database']} at {where['host']}:{where['port']}")
        except warehouse.errors() as exc:
            lines.append(f"the {VIEWS_SCHEMA} views on {where['database']} were not made: {str(exc).strip()}")
    return lines


def _views(url: str, members: Sequence[Tenant]) -> str:
    from support import warehouse

    with warehouse.PostgresConnection(url) as con:
        columns: dict[str, dict[str, list[str]]] = {}  # table -> tenant -> its columns
        for tenant in members:
            schema = f"{tenant.schema_prefix}main"
            for table, column in con.execute(
                "select table_name, column_name from information_schema.columns where table_schema = ? "
                "order by table_name, ordinal_position",
                [schema],
            ).fetchall():
                columns.setdefault(table, {}).setdefault(tenant.name, []).append(column)
        con.execute("begin")
        try:
            con.execute(f'create schema if not exists "{VIEWS_SCHEMA}"')
            for (view,) in con.execute(
                "select table_name from information_schema.views where table_schema = ?", [VIEWS_SCHEMA]
            ).fetchall():
                con.execute(f'drop view "{VIEWS_SCHEMA}"."{view}"')
            for table, found in sorted(columns.items()):
                first = next(iter(found.values()))
                shared = [c for c in first if all(c in other for other in found.values())]
                chosen = ", ".join(f'"{c}"' for c in shared)
                parts = [
                    f'select \'{name}\' as tenant, {chosen} from "{tenant.schema_prefix}main"."{table}"'
                    for tenant in members
                    if (name := tenant.name) in found
                ]
                con.execute(f'create view "{VIEWS_SCHEMA}"."{table}" as ' + " union all ".join(parts))
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    synced = sorted({name for found in columns.values() for name in found})
    return f"{VIEWS_SCHEMA}: {len(columns)} views across {', '.join(synced) or 'no tenant yet'}"
