"""Every failure reaches the user as one line that names what failed and what to do.

Errors arrive wrapped: dlt wraps whatever a resource raised in its own
PipelineStepFailed (a 401 while extracting), DuckDB says a file is locked in a
paragraph. `failure_line` finds the error that matters in the chain and says it in
one line; `crmsync --debug` shows the traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import psycopg2

from connectors.errors import ApiError, AuthError
from crmsync.dbt import DbtError

DOMAIN_ERRORS = (ApiError, DbtError, duckdb.Error, psycopg2.Error)


def root_cause(error: BaseException) -> BaseException:
    """The first error in the chain that the product raised or DuckDB did (dlt's wrappers,
    ours, and what they were raised from), else the error itself."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, DOMAIN_ERRORS):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "exception", None)  # dlt's PipelineStepFailed
        if not isinstance(wrapped, BaseException):
            wrapped = None
        current = wrapped or current.__cause__ or current.__context__
    return error


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.strip().splitlines()[:1]) or "no message"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def tenant_line(line: str, tenant: str, auth_system: str | None = None) -> str:
    """A failure line of tenant `tenant`'s run, with the settings it names as the keys of the
    tenant's entry that hold them (KEAP_REFRESH_TOKEN: keap_refresh_token of tenant 'acme')."""
    from crmsync.tenants import SETTING_KEYS

    if auth_system:
        line = line.replace(f"the {auth_system.upper()}_* settings",
                            f"the {auth_system}_* keys of tenant {tenant!r} in the tenants file")  # fmt: skip
    names = re.compile(r"\b(" + "|".join(sorted(SETTING_KEYS, key=len, reverse=True)) + r")\b")
    line, named = names.subn(lambda m: SETTING_KEYS[m.group(1)], line)
    return line + (
        f" ({'key' if named == 1 else 'keys'} of tenant {tenant!r} in the tenants file)" if named else ""
    )


def locked_file_line(db_path: Path, message: str) -> str:
    holder = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    who = f" ({holder.group(1)}, pid {holder.group(2)})" if holder else ""
    return (
        f"{db_path} is open in another program{who}; DuckDB lets one program at a time use it "
        "for writing: close that connection (a DuckDB client, a notebook) and run crmsync again"
    )


def failure_line(error: BaseException, db_path: Path) -> str:
    cause = root_cause(error)
    if isinstance(cause, duckdb.IOException) and "lock" in str(cause).lower():
        return locked_file_line(db_path, str(cause))
    if isinstance(cause, ApiError | DbtError):
        line = _first_line(str(cause), 1000)
        tenant = os.environ.get("CRMSYNC_TENANT")
        if tenant:  # the tenant's entry holds them, not the environment
            return tenant_line(line, tenant, cause.system if isinstance(cause, AuthError) else None)
        return line
    if isinstance(cause, duckdb.Error):
        return f"the DuckDB file {db_path}: {_first_line(str(cause))}"
    if isinstance(cause, psycopg2.Error):
        from support import warehouse

        url = warehouse.url()
        where = warehouse.parts(url) if url else {"database": "?", "host": "?", "port": "?"}
        return (f"the PostgreSQL warehouse {where['database']} on {where['host']}:{where['port']} "
                f"(CRMSYNC_WAREHOUSE): {_first_line(str(cause))}")  # fmt: skip
    # not foreseen: say what it is; `crmsync --debug` shows where
    return f"{type(cause).__name__}: {_first_line(str(cause))} (crmsync --debug shows where)"
