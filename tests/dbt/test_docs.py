"""The property tables: generated from the models' metadata, and equal to the specification."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmsync.dataflow import DOCS_FILE, docs_file, manifest, mappings, restructured_text
from tests.conftest import REPO


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return mappings(manifest(tmp_path_factory.mktemp("docs") / "x.duckdb"))


def test_the_docs_page_is_generated_from_the_models(found) -> None:  # type: ignore[no-untyped-def]
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


def test_the_models_map_exactly_the_properties_of_the_specification(found) -> None:  # type: ignore[no-untyped-def]
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
