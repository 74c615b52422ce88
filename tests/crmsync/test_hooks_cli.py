"""`crmsync hooks ...` as a user runs them, against the sandboxes: serve (a process of its
own), register, list, url, check, remove; failures are one line, and the secret shows only
where `crmsync hooks url` prints it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.bundle import Sandboxes
from tests.conftest import admin
from tests.crmsync.test_cli import KEYS


@pytest.fixture
def env(sandboxes: Sandboxes, tmp_path: Path) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if k not in KEYS}
    found.update(
        KEAP_API_URL=sandboxes.keap_url,
        KEAP_API_KEY=sandboxes.keap.credentials.api_key,
        CUSTOMCRM_API_URL=sandboxes.customcrm_url,
        CUSTOMCRM_API_TOKEN=sandboxes.customcrm.credentials.token,
        CRMSYNC_DB=str(tmp_path / "crmsync.duckdb"),
    )
    with httpx.Client() as client:
        admin(client, sandboxes.keap_root, "/_sandbox/config", {"hooks": {"delay_s": [0.01, 0.02]}})
    return found


def hooks(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmsync.cli", "hooks", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`crmsync hooks serve` on a free port; its base URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "crmsync.cli", "hooks", "serve", "--port", "0", "--debounce", "0.2"],
        cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+)/hooks/\*\*\*", line)
    assert found, line
    try:
        yield process, found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_register_list_url_check_and_remove(
    env: dict[str, str], tmp_path: Path, sandboxes: Sandboxes, served: tuple[subprocess.Popen[str], str]
) -> None:
    process, base = served
    registered = hooks(env, tmp_path, "register", "--url", base)
    assert registered.returncode == 0, registered.stderr
    assert "hooks: 13 of 13 subscriptions verified, 13 created" in registered.stdout
    secret = (tmp_path / "crmsync.state" / "hooks.secret").read_text().strip()

    listed = hooks(env, tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.count("\tyes\t") == 13
    url = hooks(env, tmp_path, "url")
    assert url.stdout.strip() == f"{base}/hooks/{secret}"  # the one place the secret is shown
    echoed = httpx.post(url.stdout.strip(), headers={"X-Hook-Secret": "check"})
    assert echoed.headers["x-hook-secret"] == "check"
    assert (
        hooks(env, tmp_path, "register", "--url", base).stdout.count("Verified") == 13
    )  # again: nothing new
    assert hooks(env, tmp_path, "check").stdout.strip() == "hooks: 13 of 13 subscriptions verified"

    process.send_signal(signal.SIGTERM)  # the receiver down past Keap's retries: Inactive
    process.wait(timeout=60)
    with httpx.Client() as client:
        admin(
            client,
            sandboxes.keap_root,
            "/_sandbox/hooks/emit",
            {"event_key": "product.edit", "ids": ["4001"]},
        )
        deadline = time.monotonic() + 60
        while "Inactive" not in str(admin(client, sandboxes.keap_root, "/_sandbox/hooks")["hooks"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    checked = hooks(env, tmp_path, "check")
    assert checked.returncode == 1 and checked.stdout == ""
    assert checked.stderr.count("\n") == 1 and "Traceback" not in checked.stderr
    assert "1 still Inactive (product.edit): Keap cannot reach http://127.0.0.1:" in checked.stderr
    assert "/hooks/***; start `crmsync hooks serve` there" in checked.stderr

    removed = hooks(env, tmp_path, "remove")
    assert removed.stdout.strip() == "hooks: 13 subscriptions removed; the scheduled sync goes on alone"
    assert "0 subscriptions" in hooks(env, tmp_path, "list").stdout
    everything = [registered, listed, checked, removed, process]
    for output in everything:
        text = output.stdout + output.stderr if isinstance(output, subprocess.CompletedProcess) else ""
        assert secret not in text
    assert process.stderr is not None and secret not in process.stderr.read()


def test_a_receiver_nobody_runs_is_one_line_naming_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    not_yet = hooks(env, tmp_path, "check")
    assert (
        not_yet.returncode == 1
        and "no hooks are registered: run `crmsync hooks register --url" in not_yet.stderr
    )
    refused = hooks(env, tmp_path, "register", "--url", "http://127.0.0.1:9")  # nothing listens there
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "13 still Unverified" in refused.stderr and "crmsync hooks serve" in refused.stderr
    insecure = hooks(env, tmp_path, "register", "--url", "http://hooks.example.com")
    assert insecure.returncode == 1
    assert insecure.stderr.startswith("crmsync: --url http://hooks.example.com uses plain http://")
    still = hooks(env, tmp_path, "verify")  # registered, so verify knows where: still nobody there
    assert still.returncode == 1 and "13 still Unverified" in still.stderr
