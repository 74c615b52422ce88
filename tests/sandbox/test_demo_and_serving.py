"""Demo data, persistence, loopback-only binding, and `crmsync sandbox`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.bundle import Sandboxes
from sandbox.runtime import ServerThread


def _dump(boxes: Sandboxes) -> tuple[list, list]:
    keap = boxes.keap.store.db.execute(
        "select resource, id, update_us, doc from records order by 1, 2"
    ).fetchall()
    crm = boxes.customcrm.store.db.execute(
        "select resource, id, updated_us, doc from records order by 1, 2"
    ).fetchall()
    return keap, crm


def test_demo_data_is_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = (Sandboxes(tmp_path / name) for name in "abc")
    a.seed_demo(size=80, seed=9)
    b.seed_demo(size=80, seed=9)
    c.seed_demo(size=80, seed=10)
    assert _dump(a) == _dump(b)
    assert _dump(a) != _dump(c)


def test_demo_data_has_the_variety_a_real_pair_of_crms_has(tmp_path: Path) -> None:
    boxes = Sandboxes(tmp_path)
    summary = boxes.seed_demo(size=200, seed=42)
    assert summary.keap == {"companies": 200, "contacts": 200, "opportunities": 200, "products": 200}
    store = boxes.keap.store
    docs = {
        r: [d for d, _, _ in store.query(r, [], "id", 0, 1000)] for r in ("companies", "contacts", "products")
    }
    assert any(not name.isascii() for c in docs["contacts"] for name in (c["given_name"], c["family_name"]))
    assert any("address" not in c for c in docs["companies"])
    assert any(len(c["email_addresses"]) > 1 for c in docs["contacts"])
    assert any(a["field"] == "SHIPPING" for c in docs["contacts"] for a in c.get("addresses", []))
    assert any(len(c.get("phone_numbers", [])) > 1 for c in docs["contacts"])

    crm = boxes.customcrm.store
    rows = {
        r: [
            row.doc
            for row in crm.page(
                r, after=None, updated_since_us=None, include_deleted=False, external_ref=None, limit=10_000
            )
        ]
        for r in ("customers", "contacts", "products", "orders")
    }
    keap_emails = {c["email_addresses"][0]["email"].lower() for c in docs["contacts"]}
    keap_skus = {p["sku"] for p in docs["products"]}
    crm_emails = [(c["Email"] or "").lower() for c in rows["contacts"]]
    assert sum(e in keap_emails for e in crm_emails) >= 3  # already there, same email
    assert any(e not in keap_emails for e in crm_emails)  # only in Customcrm
    assert sum(p["Sku"] in keap_skus for p in rows["products"]) >= 3
    assert any(p["Sku"] not in keap_skus for p in rows["products"])
    assert any(c["OrgNumber"] for c in rows["customers"])
    assert rows["orders"]


def test_data_persists_between_runs(tmp_path: Path) -> None:
    with Sandboxes(tmp_path) as boxes:
        boxes.seed_demo(size=5)
        key = boxes.keap.credentials.api_key
        created = httpx.post(
            boxes.keap_url + "/companies", json={"company_name": "Persisted"}, headers={"X-Keap-API-Key": key}
        ).json()
    with Sandboxes(tmp_path) as again:
        assert not again.is_empty
        fetched = httpx.get(f"{again.keap_url}/companies/{created['id']}", headers={"X-Keap-API-Key": key})
        assert fetched.json()["company_name"] == "Persisted"


def test_servers_bind_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ServerThread(app=lambda *a: None, host="0.0.0.0")  # type: ignore[arg-type]


def test_crmsync_sandbox_serves_both_with_demo_data(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmsync.cli",
            "sandbox",
            "--data-dir",
            str(tmp_path),
            "--keap-port",
            "0",
            "--customcrm-port",
            "0",
            "--size",
            "12",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        assert process.stdout is not None
        while not any("Ctrl-C" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        keap_url = re.search(r"KEAP_API_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
        key = re.search(r"KEAP_API_KEY=(\S+)", text).group(1)  # type: ignore[union-attr]
        crm_url = re.search(r"CUSTOMCRM_API_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
        token = re.search(r"CUSTOMCRM_API_TOKEN=(\S+)", text).group(1)  # type: ignore[union-attr]
        assert keap_url.startswith("http://127.0.0.1:") and crm_url.startswith("http://127.0.0.1:")
        contacts = httpx.get(keap_url + "/contacts", headers={"X-Keap-API-Key": key}).json()["contacts"]
        assert len(contacts) == 12
        customers = httpx.get(crm_url + "/customers", headers={"Authorization": f"Bearer {token}"}).json()
        assert customers["data"]
        assert (
            json.loads(httpx.get(keap_url.split("/crm")[0] + "/_sandbox/config").text)["limits"]
            == "published"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert process.returncode == 0
