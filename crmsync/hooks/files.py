"""The hooks' files in the state folder (`<db>.state/`), readable by their owner only.

- `hooks.secret`: the path secret, generated once (0600). The receiver answers only on
  `/hooks/<secret>`; whoever does not know it gets 404. It is in the URL Keap is given and
  nowhere else: never in a log line, a message or the DuckDB file.
- `hooks.json`: the public base URL the subscriptions were registered with (no secret);
  its presence is what "hooks are configured" means for `crmsync sync`.
- `hooks.sqlite3`: the spool (crmsync.hooks.spool).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from crmsync.settings import insecure_reason

SECRET_FILE = "hooks.secret"
CONFIG_FILE = "hooks.json"
SPOOL_FILE = "hooks.sqlite3"
PATH_PREFIX = "/hooks/"
DEFAULT_PORT = 8780


def path_secret(state_dir: Path, create: bool = True) -> str | None:
    """The tenant's path secret: read, or (with `create`) generated once and kept 0600."""
    path = state_dir / SECRET_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if not create:
            return None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: theirs stands
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
        out.flush()
        os.fsync(out.fileno())
    return secret


def hook_path(secret: str) -> str:
    return PATH_PREFIX + secret


def hook_url(base: str, secret: str) -> str:
    return base.rstrip("/") + hook_path(secret)


def hidden(text: str, secret: str | None) -> str:
    """`text` with the secret replaced by `***` (for every line a user or a log sees)."""
    return text.replace(secret, "***") if secret else text


def public_base(url: str, secret: str | None, allow_insecure: bool) -> str:
    """The base URL the receiver is reachable at, checked: http(s), a host, https unless
    loopback (or CRMSYNC_ALLOW_INSECURE_HTTP=1: the secret would travel in the clear).
    A URL that already ends in the hook path is taken without it."""
    base = url.strip().rstrip("/")
    if secret and base.endswith(hook_path(secret)):
        base = base[: -len(hook_path(secret))]
    try:
        parts = urlsplit(base)
    except ValueError:
        raise ValueError(f"--url {hidden(url, secret)!r} is not a URL") from None
    if parts.query or parts.fragment:
        raise ValueError("--url takes the receiver's base URL, without a query or fragment")
    reason = insecure_reason(base)
    if reason == "uses plain http://" and allow_insecure:
        reason = None
    if reason:
        raise ValueError(
            f"--url {hidden(url, secret)} {reason}: Keap must reach the receiver over https:// "
            "(plain http only on loopback, or with CRMSYNC_ALLOW_INSECURE_HTTP=1)"
        )
    return base


@dataclass(frozen=True)
class HookConfig:
    url: str  # the public base URL; the hook URL is url + /hooks/<secret>


def load_config(state_dir: Path) -> HookConfig | None:
    try:
        found = json.loads((state_dir / CONFIG_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(
            f"{state_dir / CONFIG_FILE} is not JSON: run `crmsync hooks register` again"
        ) from None
    if not isinstance(found, dict) or not isinstance(found.get("url"), str):
        raise ValueError(f"{state_dir / CONFIG_FILE} names no url: run `crmsync hooks register` again")
    return HookConfig(found["url"])


def save_config(state_dir: Path, config: HookConfig) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / CONFIG_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": config.url}, out)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)


def forget_config(state_dir: Path) -> None:
    (state_dir / CONFIG_FILE).unlink(missing_ok=True)
