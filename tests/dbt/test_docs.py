"""The property tables: generated from the registry, and equal to the specification."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmsync.dataflow import DOCS_FILE, docs_file, manifest, mappings, restructured_text
from tests.conftest import REPO


@pytest.fixture(scope="module")
def found():  # type: ignore[no-untyped-def]
    return mappings()


def test_the_docs_page_is_generated_from_the_registry(found) -> None:  # type: ignore[no-untyped-def]
    assert DOCS_FILE.read_text() == docs_file(found), "run `crmsync dataflow --write-docs`"


def test_docs_dataflow_rst_is_what_crmsync_dataflow_prints(found) -> None:  # type: ignore[no-untyped-def]
    assert (REPO / "docs" / "dataflow.rst").read_text() == restructured_text(found), (
        "run `crmsync dataflow > docs/dataflow.rst`"
    )


def _spec_tables() -> list[list[tuple[str, str, str]]]:
    """The four property tables of docs/specification.md, backticks dropped."""
    tables, current = [], None
    for line in (REPO / "docs" / "specification.md").read_text().splitlines():
        if line.startswith("| Keap "):
            current = []
            tables.append(current)
        elif current is not None and line.startswith("|") and not line.startswith("|---"):
            cells = [re.sub(r"`", "", c).strip() for c in line.strip("|").split("|")]
            current.append((cells[0], cells[1], cells[2]))
        elif not line.startswith("|"):
            current = None
    return tables


def test_the_registry_maps_exactly_the_properties_of_the_specification(found) -> None:  # type: ignore[no-untyped-def]
    spec = _spec_tables()
    assert len(spec) == len(found) == 4
    for table, mapping in zip(spec, found, strict=True):
        ours = [(k, c, t) for k, c, t in mapping.rows]
        assert [(k, c) for k, c, _ in ours] == [(k, c) for k, c, _ in table], mapping.entity
        # types: the spec's words, ours may say where a rule lives (the seed's name)
        assert [t.split(",")[0].split(" (")[0] for _, _, t in ours] == [
            t.split(",")[0].split(" (")[0] for _, _, t in table
        ]


def test_the_dataflow_names_all_four_flows_in_the_source_documents_words(found) -> None:  # type: ignore[no-untyped-def]
    text = restructured_text(found)
    for keap, crm in (
        ("Companies", "Customer"),
        ("Contacts", "Contact"),
        ("Opportunity", "Order"),
        ("Product", "Product"),
    ):
        assert f"Every Keap {keap} will be synchronized with a Customcrm {crm}." in text
    assert text.count(".. list-table::") == 4


def test_every_model_and_column_is_described(tmp_path: Path) -> None:
    data = manifest(tmp_path / "x.duckdb")  # a folder of its own: no parse cache shared with other runs
    missing = []
    for node in data["nodes"].values():
        if node["resource_type"] not in ("model", "seed") or node["package_name"] != "crmsync":
            continue
        if node["resource_type"] == "model" and not node["description"].strip():
            missing.append(node["name"])
        if node["resource_type"] == "model":
            missing += [
                f"{node['name']}.{c}" for c, col in node["columns"].items() if not col["description"].strip()
            ]
    assert not missing, missing


def test_each_property_row_shows_its_direction_and_rule(found) -> None:  # type: ignore[no-untyped-def]
    text = docs_file(found)
    rows = {line.split("|")[2].strip(): line.split("|")[4].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Keap ")}  # fmt: skip
    assert rows["`Status` (open, won, lost)"].startswith("Keap → Customcrm, derived")  # an order's Status
    assert rows["`Currency`"].startswith("Keap → Customcrm only")  # a product's currency
    assert rows["`Title`"].startswith("both ways")
    assert rows["`ExternalRefs.keap`"].startswith("the link")
    assert "| direction |" in text


def test_dbt_run_by_hand_in_dbt_project_finds_the_default_duckdb_file(tmp_path: Path) -> None:
    """README "Using dbt directly": `cd dbt_project && ../.venv/bin/dbt debug` works with the
    default file (data/crmsync.duckdb at the root), CRMSYNC_DB unset."""
    import os
    import shutil
    import subprocess
    import sys

    project = tmp_path / "dbt_project"
    shutil.copytree(REPO / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CRMSYNC_DB", "DBT_PROFILES_DIR")}
    done = subprocess.run([str(Path(sys.executable).parent / "dbt"), "debug"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "All checks passed" in done.stdout


def test_every_sync_state_table_and_column_is_a_described_source(tmp_path: Path) -> None:
    import duckdb
    import yaml

    from reverse_etl.state import ensure_state

    db = tmp_path / "state.duckdb"
    ensure_state(db)
    with duckdb.connect(str(db)) as con:
        columns = con.execute(
            "select table_name, column_name from information_schema.columns where table_schema = 'sync_state'"
        ).fetchall()
    sources = yaml.safe_load(
        (REPO / "dbt_project" / "models" / "staging" / "sync_state" / "_sync_state__sources.yml").read_text()
    )
    described = {
        (table["name"], column["name"])
        for table in sources["sources"][0]["tables"]
        for column in table.get("columns", [])
        if column.get("description")
    }
    assert sorted(set(columns) - described) == []


def test_docs_lineage_md_is_one_picture_per_push_target_without_tests(tmp_path: Path) -> None:
    from crmsync.dataflow import LINEAGE_FILE, lineage

    text = lineage(manifest(tmp_path / "x.duckdb"))
    assert LINEAGE_FILE.read_text() == text, "run `crmsync dataflow --write-docs`"
    assert text.count("```mermaid") == 2
    assert '(["push_customcrm"])' in text and '(["push_keap"])' in text
    diagrams = [block.split("```")[0] for block in text.split("```mermaid")[1:]]
    assert not any(word in d for d in diagrams for word in ("not_null", "unique_", "accepted_values", "test"))
    customcrm, keap = diagrams
    assert 'raw_keap__contacts["raw_keap.contacts"]' in customcrm and "sync_customcrm__contacts" in customcrm
    assert "sync_keap__contacts" in keap and "sync_keap__contacts" not in customcrm
    assert "![the models the push to Customcrm reads](lineage-push_customcrm.svg)" in text


def test_each_push_targets_lineage_picture_is_current_and_holds_its_models_only(tmp_path: Path) -> None:
    """docs/lineage-push_*.svg (the README shows them): one node per model, seed and raw table
    the push reads, and nothing else (no tests, not the other push's marts)."""
    import xml.etree.ElementTree as ET

    from crmsync.dataflow import PUSH_TARGETS, _upstream, lineage_svg, lineage_svg_file

    data = manifest(tmp_path / "x.duckdb")
    for exposure, system in PUSH_TARGETS:
        title = f"What the push to {system} reads (exposure {exposure}), from the raw tables"
        picture = lineage_svg(data, exposure, title)
        assert lineage_svg_file(exposure).read_text() == picture, "run `crmsync dataflow --write-docs`"
        svg = "{http://www.w3.org/2000/svg}"
        root = ET.fromstring(picture)  # well-formed XML, or a browser shows an error page instead
        boxes = {
            g.find(f"{svg}title").text for g in root.iter(f"{svg}g") if g.find(f"{svg}title") is not None
        }
        assert boxes == _upstream(data, exposure) | {f"exposure.crmsync.{exposure}"}
        assert not any(b.startswith("test.") for b in boxes)
        other = "sync_keap__contacts" if system == "Customcrm" else "sync_customcrm__contacts"
        assert f"model.crmsync.{other}" not in boxes
        edges = [p for p in root.iter(f"{svg}path")]
        assert len(edges) == sum(1 for n in boxes for p in data["parent_map"].get(n, []) if p in boxes)
