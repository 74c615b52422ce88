"""Many Keap accounts on one installation: a tenants file.

`tenants.toml` (or the file CRMSYNC_TENANTS names) has one table per tenant. Each names
where its credentials come from, never the secrets themselves: a secret is
`{ env = "NAME" }` (an environment variable) or `{ file = "path" }` (a file whose
content is the secret, such as a container's secret). It also names its state, a
DuckDB file of its own, or schemas of its own in a PostgreSQL warehouse, and its options:

    [tenants.acme]
    keap_api_key = { env = "ACME_KEAP_API_KEY" }
    customcrm_api_url = "https://crm.acme.example/api/v1"
    customcrm_api_token = { file = "/run/secrets/acme_customcrm" }
    state = "data/tenants/acme.duckdb"        # the default; relative to this file's folder
    # or, instead of the DuckDB file, schemas acme_raw_keap, acme_main, ... in PostgreSQL
    # (the URL holds a password: a reference, as a secret); `state` then names the local
    # state folder only (acme.state/ beside it)
    warehouse = { env = "WAREHOUSE_URL" }
    [tenants.acme.options]
    conflict_policy = "keap"
    vars = { create_in_keap = true }

`crmsync <command> --tenant acme` runs as if only that tenant were configured. The
process's own Keap and Customcrm settings, the DuckDB file and the sandbox folder never
reach a tenant, whether from the environment or from `.env`. Options the tenant leaves
unset keep the operator's environment (CRMSYNC_WAIT_SECONDS, for example).
`crmsync sync --all-tenants` runs one `crmsync sync --tenant NAME` process per tenant,
a few at a time (crmsync.tenant_runs).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crmsync.settings import ConfigurationError

DEFAULT_FILE = "tenants.toml"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RESERVED = {"main", "memory", "system", "temp"}  # DuckDB's own catalogs (crmsync sql --all-tenants)
# a warehouse tenant's name becomes its schemas' prefix: dlt would rewrite a leading digit or a
# doubled `_` (two tenants in one schema), and PostgreSQL cuts names at 63 bytes (raw_customcrm_staging
# and a plan's `plan_1a2b3c4d_` come on top)
WAREHOUSE_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# the tenant's keys and the settings they stand for (crmsync.settings names them all)
ADDRESSES = {
    "keap_api_url": "KEAP_API_URL",
    "keap_token_url": "KEAP_TOKEN_URL",
    "customcrm_api_url": "CUSTOMCRM_API_URL",
}
PLAIN = {"keap_client_id": "KEAP_CLIENT_ID"}
SECRETS = {
    "keap_api_key": "KEAP_API_KEY",
    "keap_access_token": "KEAP_ACCESS_TOKEN",
    "keap_refresh_token": "KEAP_REFRESH_TOKEN",
    "keap_client_secret": "KEAP_CLIENT_SECRET",
    "customcrm_api_token": "CUSTOMCRM_API_TOKEN",
}
OPTIONS = {
    "conflict_policy": "CRMSYNC_CONFLICT_POLICY",
    "vars": "CRMSYNC_VARS",
    "full_pass_every": "CRMSYNC_KEAP_FULL_PASS_EVERY",
    "retention_days": "CRMSYNC_RETENTION_DAYS",
    "run_deadline_minutes": "CRMSYNC_RUN_DEADLINE_MINUTES",
    "keap_quota_reserve": "CRMSYNC_KEAP_QUOTA_RESERVE",
    "allow_insecure_http": "CRMSYNC_ALLOW_INSECURE_HTTP",
    "duckdb_memory_limit": "CRMSYNC_DUCKDB_MEMORY_LIMIT",
    "duckdb_threads": "CRMSYNC_DUCKDB_THREADS",
}
# the settings' names, and the key of a tenant's entry that holds each (a failure line names the key)
# (an option the tenant leaves unset keeps the operator's environment: both are named)
SETTING_KEYS = {
    **{name: key for keys in (ADDRESSES, PLAIN, SECRETS) for key, name in keys.items()},
    **{name: f"options.{key}, else {name}" for key, name in OPTIONS.items()},
}
# where a tenant's data is when not in its DuckDB file: a reference (the URL holds a password),
# read even by the commands that read no secret (they read the state there)
WAREHOUSE = {"warehouse": "CRMSYNC_WAREHOUSE"}
# what belongs to one account alone: never inherited from the process or `.env`
OWN = [*ADDRESSES.values(), *PLAIN.values(), *SECRETS.values(), *WAREHOUSE.values(), "CRMSYNC_SCHEMA_PREFIX",
       "CRMSYNC_DB", "CRMSYNC_SANDBOX_DIR"]  # fmt: skip
KEYS = {*ADDRESSES, *PLAIN, *SECRETS, *WAREHOUSE, "state", "options"}


def tenants_file(env: Mapping[str, str] | None = None) -> Path:
    """CRMSYNC_TENANTS, else `tenants.toml` in the working directory."""
    return Path((env if env is not None else os.environ).get("CRMSYNC_TENANTS") or DEFAULT_FILE)


@dataclass(frozen=True)
class Tenant:
    """One tenant as the file describes it: no secret is read until `environment`."""

    name: str
    state: Path
    entry: dict[str, Any] = field(repr=False)
    source: Path

    def _where(self, key: str) -> str:
        return f"{self.source}: tenant {self.name!r}, {key}"

    def _secret(self, key: str, env: Mapping[str, str]) -> str:
        reference = self.entry[key]
        if "env" in reference:
            value = env.get(reference["env"], "").strip()
            if not value:
                raise ConfigurationError(
                    f"{self._where(key)}: the environment variable {reference['env']} is not set "
                    "(neither in the environment nor in .env)"
                )
            return value
        path = Path(reference["file"]).expanduser()
        path = path if path.is_absolute() else self.source.parent / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{self._where(key)}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigurationError(f"{self._where(key)}: {path} is empty")
        return value

    @property
    def variables(self) -> set[str]:
        """The environment variables its secrets (and its warehouse's URL) are in."""
        return {
            ref["env"]
            for key in (*SECRETS, *WAREHOUSE)
            if isinstance(ref := self.entry.get(key), dict) and "env" in ref
        }

    def synced(self) -> bool:
        """Whether it has synced: its DuckDB file, or on a warehouse its local state folder."""
        from crmsync.filemodes import state_dir

        return (state_dir(self.state) if "warehouse" in self.entry else self.state).exists()

    @property
    def schema_prefix(self) -> str | None:
        """On a PostgreSQL warehouse, what its schemas' names start with (`acme_`: acme_main,
        acme_sync_state, ...); None for a DuckDB file."""
        return self.name.replace("-", "_") + "_" if "warehouse" in self.entry else None

    def environment(self, env: Mapping[str, str], secrets: bool = True) -> dict[str, str]:
        """The settings' names this tenant sets (crmsync.settings), its secrets read from
        `env` or their files (left blank with `secrets=False`: the commands that only read
        the state need none); every name of OWN is in it, blank when the tenant leaves it
        unset, so that nothing of another account's reaches this one."""
        found = dict.fromkeys(OWN, "")
        for key, name in {**ADDRESSES, **PLAIN}.items():
            if key in self.entry:
                found[name] = self.entry[key]
        for key, name in SECRETS.items():
            if secrets and key in self.entry:
                found[name] = self._secret(key, env)
        for key, value in self.entry.get("options", {}).items():
            found[OPTIONS[key]] = _option_text(value)
        found["CRMSYNC_DB"] = str(self.state)
        if "warehouse" in self.entry:
            found["CRMSYNC_WAREHOUSE"] = self._secret("warehouse", env)
            found["CRMSYNC_SCHEMA_PREFIX"] = self.schema_prefix or ""
        return found


def _option_text(value: Any) -> str:
    """An option as its environment variable spells it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _check_entry(name: str, entry: Any, source: Path) -> dict[str, Any]:
    where = f"{source}: tenant {name!r}"
    if not NAME.fullmatch(name) or name in RESERVED:
        raise ConfigurationError(
            f"{where}: a tenant's name is lower-case letters, digits, '-' and '_' (at most 63), "
            f"and none of {', '.join(sorted(RESERVED))}"
        )
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: must be a table ([tenants.{name}])")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    for key in (*SECRETS, *WAREHOUSE):
        reference = entry.get(key)
        if reference is None:
            continue
        if isinstance(reference, str):
            raise ConfigurationError(
                f"{where}, {key}: a secret is never written in the tenants file; name where it is: "
                f'{key} = {{ env = "VARIABLE" }} or {{ file = "path" }}'
            )
        if not (isinstance(reference, dict) and len(reference) == 1 and set(reference) <= {"env", "file"}
                and isinstance(next(iter(reference.values())), str) and next(iter(reference.values()))):  # fmt: skip
            raise ConfigurationError(f'{where}, {key}: must be {{ env = "VARIABLE" }} or {{ file = "path" }}')
        named = reference.get("env")
        if named is not None and not VARIABLE.fullmatch(named):  # perhaps the secret itself: not shown
            raise ConfigurationError(
                f"{where}, {key}: env names an environment variable (letters, digits and '_'), "
                "not the secret itself"
            )
    if not any(key in entry for key in SECRETS if key.startswith("keap_")):
        raise ConfigurationError(f"{where}, keap_api_key: a tenant needs its Keap credentials "
                                 "(keap_api_key, or keap_access_token/keap_refresh_token for OAuth)")  # fmt: skip
    if not ("customcrm_api_url" in entry and "customcrm_api_token" in entry):
        raise ConfigurationError(f"{where}, customcrm_api_url: a tenant needs its Customcrm address and token "
                                 "(customcrm_api_url, customcrm_api_token)")  # fmt: skip
    for key in (*ADDRESSES, *PLAIN, "state"):
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
            raise ConfigurationError(f"{where}, {key}: must be a non-empty string")
    for key in ADDRESSES:
        if key in entry:
            try:
                credentials = urlsplit(entry[key]).username is not None
            except ValueError:  # not shown: it may hold a password
                raise ConfigurationError(f"{where}, {key}: is not a URL") from None
            if credentials:
                raise ConfigurationError(
                    f"{where}, {key}: credentials do not go into a URL in the tenants file"
                )
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise ConfigurationError(f"{where}: options must be a table ([tenants.{name}.options])")
    for key, value in options.items():
        if key not in OPTIONS:
            raise ConfigurationError(
                f"{where}, options: unknown option {key!r} (known: {', '.join(sorted(OPTIONS))})"
            )
        if key == "vars" and not isinstance(value, dict):
            raise ConfigurationError(f"{where}, options.vars: must be a table of dbt vars")
        if key != "vars" and not isinstance(value, str | int | float | bool):
            raise ConfigurationError(f"{where}, options.{key}: must be a string, number or true/false")
    return entry


def load(path: Path | None = None) -> dict[str, Tenant]:
    """The tenants of the file, in its order; ConfigurationError naming the tenant and the key
    for anything the file gets wrong (no secret is read here)."""
    path = path or tenants_file()
    try:
        found_stat = path.stat()
    except OSError:
        found_stat = None  # said below, where it is read
    # as ssh's own files: whoever can write it decides where each tenant's credentials are sent
    if found_stat is not None and found_stat.st_uid not in (os.geteuid(), 0):
        raise ConfigurationError(
            f"the tenants file {path} belongs to another user (uid {found_stat.st_uid}): it says where each "
            "tenant's credentials are sent; it must be yours (or root's)"
        )
    if found_stat is not None and found_stat.st_mode & 0o022:
        raise ConfigurationError(
            f"the tenants file {path} can be written by others (mode {stat.S_IMODE(found_stat.st_mode):04o}): "
            f"it says where each tenant's credentials are sent; make it the owner's alone (chmod go-w {path})"
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"no tenants file at {path}: write one (README: Many Keap accounts) or set CRMSYNC_TENANTS"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the tenants file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"tenants"})
    if unknown:
        raise ConfigurationError(f"{path}: unknown table {unknown[0]!r} (a tenant is [tenants.NAME])")
    entries = document.get("tenants")
    if not isinstance(entries, dict) or not entries:
        raise ConfigurationError(f"{path}: no tenant in it (a tenant is [tenants.NAME])")
    found: dict[str, Tenant] = {}
    states: dict[Path, str] = {}
    prefixes: dict[str, str] = {}
    for name, entry in entries.items():
        checked = _check_entry(name, entry, path)
        if "warehouse" in checked:  # acme-co and acme_co would share acme_co_main
            prefix = name.replace("-", "_") + "_"
            if not WAREHOUSE_NAME.fullmatch(name) or len(name) > 27:
                raise ConfigurationError(
                    f"{path}: tenant {name!r}, warehouse: a tenant on a warehouse is named by letters and digits "
                    "in words joined by one '-' or '_', starting with a letter, at most 27 characters "
                    "(its schemas' names, and dlt's, are made from it)"
                )
            if prefix.startswith(("pg_", "crmsync_")):
                raise ConfigurationError(
                    f"{path}: tenant {name!r}, warehouse: the schemas pg_* are PostgreSQL's own and "
                    "crmsync_* crmsync's (its functions, plans' scratch copies): rename it"
                )
            if prefix in prefixes:
                raise ConfigurationError(
                    f"{path}: tenants {prefixes[prefix]!r} and {name!r} would share the schemas {prefix}*: "
                    "rename one"
                )
            prefixes[prefix] = name
        state = Path(checked.get("state") or f"data/tenants/{name}.duckdb").expanduser()
        state = (state if state.is_absolute() else path.parent / state).resolve()
        if state in states:
            raise ConfigurationError(
                f"{path}: tenants {states[state]!r} and {name!r} share the state file {state}: "
                "each tenant needs its own"
            )
        states[state] = name
        found[name] = Tenant(name, state, checked, path)
    return found


def tenant(name: str, path: Path | None = None) -> Tenant:
    found = load(path)
    if name not in found:
        raise ConfigurationError(
            f"no tenant {name!r} in {path or tenants_file()} (there: {', '.join(found)})"
        )
    return found[name]


def referenced(env: Mapping[str, str], dotenv: str | Path = ".env") -> dict[str, str]:
    """Where `{ env = "NAME" }` is looked up: the environment, then `.env` in the working
    directory for what the environment leaves unset (a schedule's bare environment, as
    cron's, then finds what `.env` holds), as crmsync.settings reads its own names."""
    from dotenv import dotenv_values

    found = (
        {k: v for k, v in dotenv_values(dotenv).items() if v is not None} if Path(dotenv).is_file() else {}
    )
    return {**found, **env}


def apply(name: str, secrets: bool = True, environ: MutableMapping[str, str] | None = None) -> Tenant:
    """Make this process the tenant's: its settings in the environment, every other account's
    gone (blank, so that `.env` cannot fill them in either)."""
    environ = os.environ if environ is None else environ
    chosen = tenant(name, tenants_file(environ))
    environ.update(chosen.environment(referenced(environ), secrets))
    environ["CRMSYNC_TENANT"] = chosen.name
    return chosen


@contextmanager
def reading_as(chosen: Tenant) -> Iterator[None]:
    """This process reads as the tenant for the block (crmsync status --all-tenants): its
    warehouse and schemas, or none for its DuckDB file; no secret but the warehouse's URL
    is read. The process's own values are back afterwards."""
    from support.warehouse import using

    found = chosen.environment(referenced(dict(os.environ)), secrets=False)
    with using(found["CRMSYNC_WAREHOUSE"] or None, found["CRMSYNC_SCHEMA_PREFIX"]):
        yield
