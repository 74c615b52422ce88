"""The records go into the DuckDB file and nowhere else: dlt's load files and loaded
packages are gone after each load. A refused credential stops the ingest as itself."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest

from connectors.customcrm import customcrm_client
from connectors.errors import AuthError
from connectors.keap import KeapPacer, keap_client
from pipelines.ingest import extract
from sandbox.bundle import Sandboxes


def _clients(sandboxes: Sandboxes, key: str | None = None):  # type: ignore[no-untyped-def]
    keap = keap_client(base_url=sandboxes.keap_url, api_key=key or sandboxes.keap.credentials.api_key,
                       pacer=KeapPacer(per_second=1e6, per_minute=1e9), sleep=lambda s: None)  # fmt: skip
    crm = customcrm_client(base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token,
                           sleep=lambda s: None)  # fmt: skip
    return keap, crm


def _emails(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        keap = [json.loads(p) for (p,) in con.execute("select payload from raw_keap.contacts").fetchall()]
        crm = [json.loads(p) for (p,) in con.execute("select payload from raw_customcrm.contacts").fetchall()]
    found = {e["email"] for c in keap for e in c.get("email_addresses") or []}
    return found | {c["Email"] for c in crm if c.get("Email")}


def test_no_record_stays_in_the_state_folder_after_a_load(sandboxes: Sandboxes, tmp_path: Path) -> None:
    sandboxes.seed_demo(size=30, seed=3)
    db, state = tmp_path / "crmsync.duckdb", tmp_path / "crmsync.state"
    keap, crm = _clients(sandboxes)
    extract(db, state, keap, crm)
    extract(db, state, keap, crm)  # a second, idle run
    emails = _emails(db)
    assert len(emails) > 20
    files = [p for p in state.rglob("*") if p.is_file()]
    assert not [p for p in files if "completed_jobs" in p.parts or "loaded" in p.parts]
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert not [e for e in emails if e.encode() in data], path


def test_a_refused_credential_stops_the_ingest_as_itself(sandboxes: Sandboxes, tmp_path: Path) -> None:
    sandboxes.seed_demo(size=3, seed=3)
    keap, crm = _clients(sandboxes, key="a-revoked-key")
    with pytest.raises(AuthError, match=r"keap refused the credentials \(401\); check the KEAP_\* settings"):
        extract(tmp_path / "c.duckdb", tmp_path / "c.state", keap, crm)
