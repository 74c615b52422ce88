"""Configuration: the same names everywhere (environment, `.env`, CLI options, docs).

| name | meaning |
|---|---|
| KEAP_API_URL | Keap REST v2 base (default https://api.infusionsoft.com/crm/rest/v2) |
| KEAP_API_KEY | personal access token or service account key (header X-Keap-API-Key) |
| KEAP_ACCESS_TOKEN, KEAP_REFRESH_TOKEN, KEAP_CLIENT_ID, KEAP_CLIENT_SECRET | OAuth2 |
| KEAP_TOKEN_URL | OAuth token endpoint (default https://api.infusionsoft.com/token) |
| CUSTOMCRM_API_URL, CUSTOMCRM_API_TOKEN | the Customcrm API and its bearer token |
| CRMSYNC_DB | the DuckDB file (default data/crmsync.duckdb) |
| CRMSYNC_WAREHOUSE | postgresql://user:password@host:port/database: the sync's data there instead of the DuckDB file (the local state folder stays beside CRMSYNC_DB) |
| CRMSYNC_RETENTION_DAYS | days the payloads written to each system are kept in sync_state (default 30) |
| CRMSYNC_ALLOW_INSECURE_HTTP | 1: accept plain http:// endpoints beyond loopback (warned on every run) |
| CRMSYNC_RUN_DEADLINE_MINUTES | a run sends no request after this many minutes (default 120): a stalled API cannot keep it alive |
| CRMSYNC_WAIT_SECONDS | how long a command waits for another crmsync that holds the state file (default 5) |
| CRMSYNC_SANDBOX_DIR | the sandboxes' demo data (default: `sandbox/` beside the DuckDB file) |
| CRMSYNC_TENANTS | the tenants file (default tenants.toml); CRMSYNC_TENANT is set by `--tenant` |

With neither a Keap nor a Customcrm endpoint configured, the sync runs against
the bundled sandboxes with demo data (`sandbox_mode`).

Every endpoint must be https://: API keys, bearer and refresh tokens would otherwise
travel in the clear. Plain http:// is accepted on loopback addresses only (the
sandboxes), or anywhere with CRMSYNC_ALLOW_INSECURE_HTTP=1. Credentials written into a
URL (`https://user:password@host/`) never show in a repr or a message.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from dotenv import dotenv_values

from connectors.errors import redact
from crmsync.filemodes import state_dir

DEFAULT_KEAP_API_URL = "https://api.infusionsoft.com/crm/rest/v2"
DEFAULT_KEAP_TOKEN_URL = "https://api.infusionsoft.com/token"
DEFAULT_DB = "data/crmsync.duckdb"
DEFAULT_RUN_DEADLINE_MINUTES = 120
DEFAULT_RETENTION_DAYS = 30
DEFAULT_WAIT_SECONDS = 5.0
DEFAULT_KEAP_QUOTA_RESERVE = 100  # this run's read-back and a few later extracts (~5 requests each)

KEAP_SECRETS = ("KEAP_API_KEY", "KEAP_ACCESS_TOKEN", "KEAP_REFRESH_TOKEN", "KEAP_CLIENT_SECRET")


class ConfigurationError(Exception):
    """The configuration cannot work; the message says what to set."""


def _secret() -> str | None:
    return field(default=None, repr=False)  # type: ignore[return-value]


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and localhost: traffic that never leaves the machine."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_reason(url: str) -> str | None:
    """Why `url` would carry credentials in the clear, or None when it is fine."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        return None if is_loopback(host) else "uses plain http://"
    return "is not an https:// URL"


@dataclass(frozen=True, repr=False)
class Settings:
    keap_api_url: str = DEFAULT_KEAP_API_URL
    keap_token_url: str = DEFAULT_KEAP_TOKEN_URL
    keap_api_key: str | None = _secret()
    keap_access_token: str | None = _secret()
    keap_refresh_token: str | None = _secret()
    keap_client_id: str | None = None
    keap_client_secret: str | None = _secret()
    customcrm_api_url: str | None = None
    customcrm_api_token: str | None = _secret()
    db_path: Path = Path(DEFAULT_DB)
    warehouse: str | None = None  # CRMSYNC_WAREHOUSE: a postgresql:// URL (its password redacted in a repr)
    keap_configured: bool = False
    customcrm_configured: bool = False
    retention_days: int = DEFAULT_RETENTION_DAYS
    allow_insecure_http: bool = False
    run_deadline_s: float = DEFAULT_RUN_DEADLINE_MINUTES * 60
    wait_s: float = DEFAULT_WAIT_SECONDS
    sandbox_data: Path | None = None  # CRMSYNC_SANDBOX_DIR; else beside the DuckDB file
    # Keap requests of the day's quota the push leaves for reading (this run's read-back,
    # the next runs' extracts): its Keap writes stop there and wait for the quota's reset
    keap_quota_reserve: int = DEFAULT_KEAP_QUOTA_RESERVE
    tenant: str | None = None  # CRMSYNC_TENANT: set by `--tenant` (crmsync.tenants); named in every problem

    def __repr__(self) -> str:
        """Secrets left out, credentials in URLs redacted."""
        shown = ", ".join(f"{f.name}={redact(repr(getattr(self, f.name)))}" for f in fields(self) if f.repr)
        return f"Settings({shown})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: str | Path = ".env") -> Settings:
        """Environment first, then `.env` for what the environment leaves unset."""
        try:
            return cls._from_env(env, dotenv)
        except ConfigurationError as exc:
            tenant = (os.environ if env is None else env).get("CRMSYNC_TENANT")
            if tenant:
                raise ConfigurationError(f"tenant {tenant!r}: {exc}") from None
            raise

    @classmethod
    def _from_env(cls, env: Mapping[str, str] | None, dotenv: str | Path) -> Settings:
        values: dict[str, str] = {}
        if env is None:
            if Path(dotenv).is_file():
                values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
            values.update(os.environ)
        else:
            values.update(env)

        def get(name: str) -> str | None:
            value = values.get(name, "").strip()
            return value or None

        retention = get("CRMSYNC_RETENTION_DAYS") or str(DEFAULT_RETENTION_DAYS)
        if not retention.isdigit():
            raise ConfigurationError(
                f"CRMSYNC_RETENTION_DAYS must be a whole number of days (got {retention!r})"
            )

        def number(name: str, default: float, positive: bool, what: str) -> float:
            text = get(name) or str(default)
            try:
                value = float(text)
            except ValueError:
                value = -1
            if value < 0 or (positive and value == 0):
                raise ConfigurationError(f"{name} must be {what} (got {text!r})")
            return value

        deadline_minutes = number(
            "CRMSYNC_RUN_DEADLINE_MINUTES", DEFAULT_RUN_DEADLINE_MINUTES, True, "a positive number of minutes"
        )
        wait_s = number("CRMSYNC_WAIT_SECONDS", DEFAULT_WAIT_SECONDS, False, "a number of seconds, 0 or more")
        reserve = number("CRMSYNC_KEAP_QUOTA_RESERVE", DEFAULT_KEAP_QUOTA_RESERVE, False,
                         "a whole number of requests, 0 or more")  # fmt: skip
        if reserve != int(reserve):
            raise ConfigurationError(
                f"CRMSYNC_KEAP_QUOTA_RESERVE must be a whole number of requests (got {reserve})"
            )
        sandbox = get("CRMSYNC_SANDBOX_DIR")
        warehouse = get("CRMSYNC_WAREHOUSE")
        allow_insecure = (get("CRMSYNC_ALLOW_INSECURE_HTTP") or "").lower() in ("1", "true", "yes")
        if warehouse is not None:
            check_warehouse(warehouse, allow_insecure)
        keap_configured = any(get(n) for n in ("KEAP_API_URL", *KEAP_SECRETS))
        customcrm_configured = any(get(n) for n in ("CUSTOMCRM_API_URL", "CUSTOMCRM_API_TOKEN"))
        return cls(
            keap_api_url=(get("KEAP_API_URL") or DEFAULT_KEAP_API_URL).rstrip("/"),
            keap_token_url=get("KEAP_TOKEN_URL") or DEFAULT_KEAP_TOKEN_URL,
            keap_api_key=get("KEAP_API_KEY"),
            keap_access_token=get("KEAP_ACCESS_TOKEN"),
            keap_refresh_token=get("KEAP_REFRESH_TOKEN"),
            keap_client_id=get("KEAP_CLIENT_ID"),
            keap_client_secret=get("KEAP_CLIENT_SECRET"),
            customcrm_api_url=(get("CUSTOMCRM_API_URL") or "").rstrip("/") or None,
            customcrm_api_token=get("CUSTOMCRM_API_TOKEN"),
            db_path=Path(get("CRMSYNC_DB") or DEFAULT_DB),
            warehouse=warehouse,
            keap_configured=keap_configured,
            customcrm_configured=customcrm_configured,
            retention_days=int(retention),
            allow_insecure_http=allow_insecure,
            run_deadline_s=deadline_minutes * 60,
            wait_s=wait_s,
            keap_quota_reserve=int(reserve),
            sandbox_data=Path(sandbox) if sandbox else None,
            tenant=get("CRMSYNC_TENANT"),
        )

    @property
    def sandbox_mode(self) -> bool:
        """Neither system configured: run against the bundled sandboxes."""
        return not (self.keap_configured or self.customcrm_configured)

    @property
    def sandbox_dir(self) -> Path:
        """Where the bundled sandboxes keep their demo data: CRMSYNC_SANDBOX_DIR, else `sandbox/`
        in the DuckDB file's folder (`data/sandbox/` by default)."""
        return self.sandbox_data or self.db_path.parent / "sandbox"

    @property
    def state_dir(self) -> Path:
        """dlt's working folder and other state live beside the DuckDB file."""
        return state_dir(self.db_path)

    def endpoint_urls(self) -> dict[str, str]:
        """Every URL a configured run sends credentials to, by its variable."""
        urls = {"KEAP_API_URL": self.keap_api_url, "KEAP_TOKEN_URL": self.keap_token_url}
        if self.customcrm_api_url:
            urls["CUSTOMCRM_API_URL"] = self.customcrm_api_url
        return urls

    def insecure_endpoints(self) -> list[str]:
        """The variables whose URL is plain http:// beyond loopback (allowed only with
        CRMSYNC_ALLOW_INSECURE_HTTP=1)."""
        if self.sandbox_mode:
            return []
        return [
            name for name, url in self.endpoint_urls().items() if insecure_reason(url) == "uses plain http://"
        ]

    def insecure_http_warning(self) -> str | None:
        """The line every run prints while CRMSYNC_ALLOW_INSECURE_HTTP lets plain http through."""
        names = self.insecure_endpoints()
        if not (names and self.allow_insecure_http):
            return None
        return (
            f"warning: {', '.join(names)} {'uses' if len(names) == 1 else 'use'} plain http:// "
            "(CRMSYNC_ALLOW_INSECURE_HTTP=1): credentials and customer data travel unencrypted"
        )

    def validate(self) -> None:
        """Raise ConfigurationError naming what is missing or unsafe; sandbox mode needs nothing."""
        if self.sandbox_mode:
            return
        problems = []
        for name, url in self.endpoint_urls().items():
            reason = insecure_reason(url)
            if reason == "uses plain http://" and self.allow_insecure_http:
                continue
            if reason == "uses plain http://":
                problems.append(
                    f"{name} uses plain http://, which would send credentials unencrypted: use https:// "
                    "(plain http is accepted for 127.0.0.1/localhost only, or with CRMSYNC_ALLOW_INSECURE_HTTP=1)"
                )
            elif reason:
                problems.append(f"{name} {reason}: set it to the service's https:// address")
        if not self.keap_configured:
            problems.append("Keap is not configured: set KEAP_API_KEY (or the KEAP_* OAuth settings)")
        elif not (self.keap_api_key or self.keap_access_token or self.keap_refresh_token):
            problems.append("KEAP_API_KEY, or KEAP_ACCESS_TOKEN/KEAP_REFRESH_TOKEN for OAuth, is required")
        elif self.keap_refresh_token and not (self.keap_client_id and self.keap_client_secret):
            problems.append("OAuth refresh needs KEAP_CLIENT_ID and KEAP_CLIENT_SECRET")
        if not self.customcrm_api_url:
            problems.append("CUSTOMCRM_API_URL is not set")
        if not self.customcrm_api_token:
            problems.append("CUSTOMCRM_API_TOKEN is not set")
        if problems:
            raise ConfigurationError(
                (f"tenant {self.tenant!r}: " if self.tenant else "") + "; ".join(problems)
            )


def check_warehouse(url: str, allow_insecure: bool = False) -> None:
    """CRMSYNC_WAREHOUSE must be a postgresql:// URL with a host and a database, and beyond
    loopback it must ask for TLS (`sslmode=require`, `verify-ca` or `verify-full`: the
    password and the customers' data would otherwise cross the network in the clear),
    unless CRMSYNC_ALLOW_INSECURE_HTTP=1 says unencrypted connections are accepted. The
    message never shows the password."""
    try:
        found = urlsplit(url)
        found.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigurationError(
            "CRMSYNC_WAREHOUSE is not a URL: postgresql://user:password@host:port/database"
        ) from None
    if found.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"CRMSYNC_WAREHOUSE must be a postgresql:// URL (got {found.scheme or 'no'} scheme); "
            "unset it for the DuckDB file"
        )
    if not found.hostname or not found.path.strip("/"):
        raise ConfigurationError(
            f"CRMSYNC_WAREHOUSE needs a host and a database: postgresql://user:password@host:port/database "
            f"(got {redact(url)})"
        )
    sslmode = dict(parse_qsl(found.query)).get("sslmode", "")
    if not (
        is_loopback(found.hostname) or sslmode in ("require", "verify-ca", "verify-full") or allow_insecure
    ):
        raise ConfigurationError(
            f"CRMSYNC_WAREHOUSE connects to {found.hostname} without TLS, which would send its password and "
            "the customers' data unencrypted: add ?sslmode=verify-full (or require) to the URL "
            "(plain connections are accepted for 127.0.0.1/localhost only, or with CRMSYNC_ALLOW_INSECURE_HTTP=1)"
        )
