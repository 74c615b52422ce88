"""The dbt docs site, rendered in headless Chromium: the mappings' pages and the lineage
from every source to both push targets are there. Debian's chromium is installed when
missing (CI runs as root on a machine that reaches Debian's package registry)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crmsync.dataflow import lineage_svg_file
from crmsync.dbt import run_dbt, target_dir
from reverse_etl.state import ensure_state
from sandbox.runtime import free_port

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
        found = shutil.which("chromium")
    assert found, "chromium could not be installed"
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("docs") / "docs.duckdb"
    ensure_state(db)  # the docs page itself is checked in (tests/dbt/test_docs.py checks it is current)
    generated = run_dbt(["docs", "generate"], db)
    assert generated.success, generated.failures
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(target_dir(db)))
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def render(url: str, tmp: Path) -> str:
    result = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout


@pytest.mark.parametrize("mapping", ["customers", "contacts", "orders", "products"])
def test_each_mapping_has_its_page_with_its_property_table(site: str, mapping: str, tmp_path: Path) -> None:
    dom = render(f"{site}/index.html#!/model/model.crmsync.link_{mapping}", tmp_path)
    assert f"link_{mapping}" in dom
    keap, crm = {"customers": ("Companies", "Customer"), "contacts": ("Contacts", "Contact"),
                 "orders": ("Opportunity", "Order"), "products": ("Product", "Product")}[mapping]  # fmt: skip
    assert f"Keap {keap} property" in dom and f"Customcrm {crm} property" in dom
    assert "direction" in dom and "both ways" in dom  # each row says which way it goes
    assert "ExternalRefs.keap" in dom


def test_the_overview_shows_all_four_property_tables(site: str, tmp_path: Path) -> None:
    dom = render(f"{site}/index.html#!/overview", tmp_path)
    for heading in ("Keap Companies ⇄ Customcrm Customer", "Keap Contacts ⇄ Customcrm Contact",
                    "Keap Opportunity ⇄ Customcrm Order", "Keap Product ⇄ Customcrm Product"):  # fmt: skip
        assert heading in dom


def test_the_lineage_runs_from_every_source_to_both_push_targets(site: str, tmp_path: Path) -> None:
    manifest = httpx.get(f"{site}/manifest.json").json()
    children = manifest["child_map"]
    sources = [
        s
        for s in manifest["sources"]
        if s.startswith(("source.crmsync.raw_keap.", "source.crmsync.raw_customcrm."))
    ]
    assert len(sources) == 6 + 5  # four resources each, Keap stages and deletions, Customcrm tombstones

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    for source in sources:
        downstream = reaches(source)
        assert {"exposure.crmsync.push_customcrm", "exposure.crmsync.push_keap"} <= downstream, source
    # and the docs site draws it (the whole graph: the README shows one picture per push target)
    shot = tmp_path / "lineage.png"
    subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}", "--window-size=1600,1000",
         "--virtual-time-budget=20000", f"--screenshot={shot}",
         f"{site}/index.html#!/exposure/exposure.crmsync.push_customcrm?g_v=1"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("exposure", ["push_customcrm", "push_keap"])
def test_the_readmes_lineage_picture_of_each_push_target_renders(exposure: str, tmp_path: Path) -> None:
    """docs/lineage-push_*.svg as a browser shows it: no XML error page, every box's label there."""
    import xml.etree.ElementTree as ET

    picture = lineage_svg_file(exposure)
    root = ET.fromstring(picture.read_text())
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    dom = render(picture.as_uri(), tmp_path / "dom")
    assert "This page contains the following errors" not in dom
    assert all(f">{label}<" in dom for label in labels), "labels missing from the rendered picture"
    shot = tmp_path / "picture.png"
    subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'shot'}",
         f"--window-size={root.get('width')},{root.get('height')}", f"--screenshot={shot}", picture.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 20_000


@pytest.mark.parametrize("model", ["sync_customcrm__contacts", "sync_keap__companies"])
def test_model_meta_renders_as_a_table_of_labels_and_values(site: str, model: str, tmp_path: Path) -> None:
    """Every model's meta is flat (a value per key, no nested JSON), so the docs show it as a
    table of labels and values; one page per push target checked as a browser shows it."""
    import re

    manifest = httpx.get(f"{site}/manifest.json").json()
    metas = {
        n["name"]: n["meta"]
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["meta"]
    }
    assert metas, "no model has meta"
    nested = {
        name: meta for name, meta in metas.items() if any(isinstance(v, dict | list) for v in meta.values())
    }
    assert nested == {}
    dom = render(f"{site}/index.html#!/model/model.crmsync.{model}", tmp_path)
    shown = dict(
        re.findall(
            r'<dt class="detail-label[^"]*">([^<]*)</dt>\s*<dd class="detail-value[^"]*">([^<]*)</dd>', dom
        )
    )
    assert {k: str(v) for k, v in metas[model].items()}.items() <= shown.items(), shown
