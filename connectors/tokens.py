"""Durable storage of Keap's OAuth tokens, which rotate on every refresh.

Keap returns a new refresh token with every refresh and the old one stops
working, so the new pair is written to disk (atomically: temp file, fsync,
rename, fsync of the folder) as the first thing done with the answer, before
the new access token is used. The window in which a crash could lose a
rotated token is that one write.

The file lives in the state folder beside the DuckDB file, readable by its
owner only. It remembers a digest of the KEAP_REFRESH_TOKEN it started from: a
user who re-authorizes and sets a new one in the environment is believed over
the file.

Two processes on one grant (a sync and `crmsync extract`, two schedulers) must not
both refresh: the second would send a refresh token the first just rotated away, and
fail. A refresh therefore holds an OS lock on `keap_oauth.json.lock` (`exclusive`) and
reads the file again inside it: a rotation another process stored meanwhile is used
instead of refreshing again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TokenSet:
    access_token: str | None
    refresh_token: str | None
    expires_at: float | None  # epoch seconds; None when unknown

    def expired(self, now: float, margin: float = 60.0) -> bool:
        return self.expires_at is not None and now >= self.expires_at - margin


def _digest(token: str | None) -> str:
    return hashlib.sha256((token or "").encode()).hexdigest()


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the grant's lock, across processes (flock on a file beside the tokens; the
        OS releases it if the process dies). Blocks while another process refreshes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # releases the lock

    def load(self, env_access: str | None, env_refresh: str | None) -> TokenSet:
        """The newest tokens: the file's, unless the environment holds a newer grant."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = None
        if data and data.get("seed") == _digest(env_refresh):
            return TokenSet(data.get("access_token"), data.get("refresh_token"), data.get("expires_at"))
        return TokenSet(env_access, env_refresh, None)

    def save(self, tokens: TokenSet, env_refresh: str | None) -> None:
        payload = {
            "seed": _digest(env_refresh),
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
            "saved_at": time.time(),
        }
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".keap-oauth.")
            try:
                os.fchmod(handle, 0o600)
                os.write(handle, json.dumps(payload).encode())
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
