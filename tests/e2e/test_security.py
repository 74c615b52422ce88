"""What a real run leaves behind: no secret anywhere but where it must be, no record outside
the DuckDB file, everything readable by its owner only; payloads aged out by a sync.

The runs are `crmsync` processes against the sandboxes, configured with sentinel
credentials (the sandboxes accept exactly those): an `extract` first (dlt creates the
DuckDB file), a `sync --json` with an API key, then an OAuth `sync` that refreshes the
grant and pushes an edit to Keap, and an `extract` with credentials in the URL. Then the
DuckDB file (every table and column, as text, and its bytes), the state folder (every
file: dlt's folders, dbt's artifacts and logs, the token file), the working directory
and every output are searched.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import stat
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import pytest

from sandbox.bundle import Sandboxes
from sandbox.customcrm.app import CustomcrmCredentials
from sandbox.keap.app import KeapCredentials
from tests.conftest import admin
from tests.e2e.conftest import World

API_KEY = "SENTINEL-keap-api-key-5d1e8c"
CRM_TOKEN = "SENTINEL-customcrm-token-a93f07"
CLIENT_SECRET = "SENTINEL-keap-client-secret-61b2"
URL_PASSWORD = "SENTINEL-url-password-0c4d"
ENV_KEYS = ("KEAP_", "CUSTOMCRM_", "CRMSYNC_")


@dataclass
class Scanned:
    root: Path
    db: Path
    state: Path
    work: Path
    outputs: dict[str, str] = field(default_factory=dict)
    modes_after_extract: dict[str, int] = field(default_factory=dict)
    oauth_issued: dict[str, str] = field(default_factory=dict)
    oauth_stored: dict[str, str] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run(scan: Scanned, name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_KEYS)}
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", *args], cwd=scan.work, capture_output=True,
                          text=True, timeout=600, check=False, env={**base, "CRMSYNC_DB": str(scan.db), **env})  # fmt: skip
    scan.outputs[name] = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _record_values(db: Path) -> set[str]:
    """Emails and names of the demo records, as the APIs sent them."""
    found: set[str] = set()
    with duckdb.connect(str(db), read_only=True) as con:
        for (payload,) in con.execute("select payload from raw_keap.contacts").fetchall():
            record = json.loads(payload)
            found |= {e["email"] for e in record.get("email_addresses") or []}
            if record.get("given_name") and record.get("family_name"):
                found.add(f"{record['given_name']} {record['family_name']}")
        for (payload,) in con.execute("select payload from raw_customcrm.contacts").fetchall():
            record = json.loads(payload)
            found |= {record[k] for k in ("Email", "Name") if record.get(k) and len(record[k]) > 6}
    return found


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    root = tmp_path_factory.mktemp("security")
    scan = Scanned(root, root / "data" / "crmsync.duckdb", root / "data" / "crmsync.state", root / "work")
    scan.work.mkdir()
    boxes = Sandboxes(root / "sandbox")
    boxes.keap.credentials = KeapCredentials(
        api_key=API_KEY, client_id="crmsync-scan", client_secret=CLIENT_SECRET
    )
    boxes.customcrm.credentials = CustomcrmCredentials(token=CRM_TOKEN)
    boxes.start()
    try:
        boxes.seed_demo(size=25, seed=11)
        crm = httpx.Client(base_url=boxes.customcrm_url, headers={"Authorization": f"Bearer {CRM_TOKEN}"})
        admin(crm, boxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
        with_key = {"KEAP_API_URL": boxes.keap_url, "KEAP_API_KEY": API_KEY,
                    "CUSTOMCRM_API_URL": boxes.customcrm_url, "CUSTOMCRM_API_TOKEN": CRM_TOKEN}  # fmt: skip

        _run(scan, "extract", with_key, "extract")  # dlt creates the DuckDB file and the state folder
        scan.modes_after_extract = {"db": _mode(scan.db), "state": _mode(scan.state)}
        _run(scan, "sync --json", with_key, "sync", "--json")

        # an edit in Customcrm: the OAuth run PATCHes Keap with its bearer token
        linked = [c for c in crm.get("/contacts", params={"limit": 100}).json()["data"]
                  if (c.get("ExternalRefs") or {}).get("keap")]  # fmt: skip
        contact = min(linked, key=lambda c: c["Id"])
        assert (
            crm.patch(f"/contacts/{contact['Id']}", json={"Title": "Edited for the scan"}).status_code == 200
        )
        scan.oauth_issued = admin(crm, boxes.keap_root, "/_sandbox/oauth/issue", {})
        admin(crm, boxes.keap_root, "/_sandbox/oauth/expire", {})  # the first request refreshes the grant
        oauth = {"KEAP_API_URL": boxes.keap_url, "KEAP_TOKEN_URL": boxes.keap_root + "/token",
                 "KEAP_CLIENT_ID": "crmsync-scan", "KEAP_CLIENT_SECRET": CLIENT_SECRET,
                 "KEAP_ACCESS_TOKEN": scan.oauth_issued["access_token"],
                 "KEAP_REFRESH_TOKEN": scan.oauth_issued["refresh_token"],
                 "CUSTOMCRM_API_URL": boxes.customcrm_url, "CUSTOMCRM_API_TOKEN": CRM_TOKEN}  # fmt: skip
        synced = _run(scan, "oauth sync", oauth, "sync", "--json")
        assert json.loads(synced.stdout)["mappings"]["contacts"]["updated"] >= 1  # a PATCH went to Keap
        scan.oauth_stored = json.loads((scan.state / "keap_oauth.json").read_text())

        in_url = {
            **with_key,
            "KEAP_API_URL": boxes.keap_url.replace("http://", f"http://scan:{URL_PASSWORD}@"),
        }
        extracted = _run(scan, "extract, credentials in the URL", in_url, "extract")
        assert "extracting from Keap at http://***@127.0.0.1:" in extracted.stderr
        scan.records = _record_values(scan.db)
        crm.close()
        yield scan
    finally:
        boxes.stop()


def _database_text(db: Path) -> str:
    """Every value of every table and view in the DuckDB file, as text."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables order by all"
        ).fetchall()
        parts = []
        for schema, table in tables:
            rows = con.execute(f'select * from "{schema}"."{table}"').fetchall()
            parts.append(f"{schema}.{table}: {rows!r}")
    return "\n".join(parts)


def _unpacked(path: Path) -> bytes:
    """A file's bytes, with what dlt compresses (gzip load files, zlib+base64 state) opened."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    extra = []
    for blob in re.findall(rb"eNp[A-Za-z0-9+/=]{8,}", data):  # dlt's compressed pipeline state
        try:
            extra.append(zlib.decompress(base64.b64decode(blob + b"=" * (-len(blob) % 4))))
        except (ValueError, zlib.error):
            continue
    return data + b"\n".join(extra)


def _files(scan: Scanned) -> dict[Path, bytes]:
    folders = (scan.state, scan.work)
    found = {p: _unpacked(p) for folder in folders for p in folder.rglob("*") if p.is_file()}
    found.update({p: _unpacked(p) for p in scan.db.parent.glob(scan.db.name + "*") if p.is_file()})
    return found


def test_the_scan_has_something_to_find(scan: Scanned) -> None:
    """The runs really used the sentinels, the tokens and the records searched for."""
    assert scan.oauth_stored["refresh_token"] not in (None, scan.oauth_issued["refresh_token"])
    assert len(scan.records) > 40
    files = _files(scan)
    assert scan.oauth_stored["refresh_token"].encode() in files[scan.state / "keap_oauth.json"]
    assert any(p.suffix == ".json" and "dbt" in p.parts for p in files)  # dbt's artifacts
    assert any(p.name == "dbt.log" for p in files)  # and logs
    assert any("dlt" in p.parts for p in files)  # dlt's folders
    assert all(scan.outputs.values())


def test_no_secret_appears_in_the_database_the_state_or_any_output(scan: Scanned) -> None:
    never = [API_KEY, CRM_TOKEN, CLIENT_SECRET, URL_PASSWORD, scan.oauth_issued["access_token"],
             scan.oauth_issued["refresh_token"]]  # fmt: skip
    only_in_the_token_file = [scan.oauth_stored["access_token"], scan.oauth_stored["refresh_token"]]
    database = _database_text(scan.db)
    for secret in never + only_in_the_token_file:
        assert secret not in database
        for name, output in scan.outputs.items():
            assert secret not in output, name
    token_file = scan.state / "keap_oauth.json"
    for path, data in _files(scan).items():
        for secret in never if path == token_file else never + only_in_the_token_file:
            assert secret.encode() not in data, path


def test_no_record_data_stays_outside_the_duckdb_file(scan: Scanned) -> None:
    assert any(value in _database_text(scan.db) for value in scan.records)  # they are in the file
    for path, data in _files(scan).items():
        if path.name.startswith(scan.db.name):
            continue  # the DuckDB file (and its WAL) is where they belong
        leaked = sorted(value for value in scan.records if value.encode() in data)
        assert not leaked, f"{path}: {leaked[:3]}"


def test_the_state_is_readable_by_its_owner_only(scan: Scanned) -> None:
    assert scan.modes_after_extract == {"db": 0o600, "state": 0o700}  # as dlt created them
    assert _mode(scan.db) == 0o600 and _mode(scan.state) == 0o700
    assert _mode(scan.state / "keap_oauth.json") == 0o600
    assert _mode(scan.state / "keap_oauth.json.lock") == 0o600
    loose = [p for p in scan.state.rglob("*") if _mode(p) & 0o077]
    assert not loose  # dbt's and dlt's files and folders too


@pytest.mark.synced  # the first sync's writes, their payloads kept
def test_a_sync_blanks_the_payloads_older_than_the_retention(world: World) -> None:
    old = "attempted_at < now() - interval '30 day'"
    assert world.sql("select count(*) from sync_state.operations where payload is not null")[0][0] > 0
    world.sql("update sync_state.operations set attempted_at = attempted_at - interval '31 day'")
    rows = world.sql("select count(*) from sync_state.operations")[0][0]
    assert (
        world.sql(f"select count(*) from sync_state.operations where {old} and payload is not null")[0][0] > 0
    )
    again = world.sync()
    assert again.quiet_since is not None  # nothing changed: the quiet path applies it too
    assert world.sql(f"select count(*) from sync_state.operations where {old} and payload is not null") == [
        (0,)
    ]
    assert world.sql("select count(*) from sync_state.operations")[0][0] == rows  # the audit stays
