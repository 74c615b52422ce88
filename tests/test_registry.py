"""The registry is the one home of each mapping: every layer reads it, and none lacks a
mapping or a field of it.

`missing_layers` enumerates the registry and names each layer that does not know a
mapping or a field; the last test gives it a fifth mapping no layer has, to show it fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import registry
from connectors.keap import list_key
from crmsync import run
from crmsync.dataflow import DOCS_FILE, manifest
from pipelines.customcrm import settings as customcrm_settings
from pipelines.keap import settings as keap_settings
from registry import dbt as registry_dbt
from registry.mappings import CustomcrmResource, Field, KeapResource, Mapping
from reverse_etl import push
from tests.conftest import REPO


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = manifest(tmp_path_factory.mktemp("registry") / "x.duckdb")
    return data["nodes"] | data["exposures"] | data["sources"]


def _model(nodes: dict[str, Any], name: str) -> dict[str, Any] | None:
    return nodes.get(f"model.crmsync.{name}")  # type: ignore[no-any-return]


def missing_layers(mappings: tuple[Mapping, ...], nodes: dict[str, Any]) -> list[str]:
    """What each layer lacks of the registry: empty when every layer has every mapping."""
    missing: list[str] = []
    project = yaml.safe_load((REPO / "dbt_project" / "dbt_project.yml").read_text())
    docs_page = DOCS_FILE.read_text()
    merged_all = _model(nodes, "int_merged_fields") or {"depends_on": {"nodes": []}}
    sides_all = _model(nodes, "int_record_sides") or {"depends_on": {"nodes": []}}
    for m in mappings:
        k, c = m.keap.name, m.customcrm.name
        # Python layers
        if k not in [r.name for r in keap_settings.RESOURCES]:
            missing.append(f"{m.name}: the Keap source does not read {k}")
        if c not in customcrm_settings.RESOURCES:
            missing.append(f"{m.name}: the Customcrm source does not read {c}")
        if list_key(k) != k:
            missing.append(f"{m.name}: the Keap connector has another list key for {k}")
        if m.name not in push.MAPPINGS:
            missing.append(f"{m.name}: the push does not push it")
        if (
            run.RESOURCE_MAPPINGS.get(("keap", k)) != m.name
            or run.RESOURCE_MAPPINGS.get(("customcrm", c)) != m.name
        ):
            missing.append(f"{m.name}: the run's report does not count its resources")
        # dbt: sources, one model per layer, the exposures, the union, the vars
        for source in (f"source.crmsync.raw_keap.{k}", f"source.crmsync.raw_customcrm.{c}"):
            if source not in nodes:
                missing.append(f"{m.name}: dbt has no {source}")
        for model in (
            f"stg_keap__{k}",
            f"stg_customcrm__{c}",
            f"int_{m.name}__matched",
            f"int_{m.name}__paired",
            f"int_{m.name}__merged",
            f"link_{m.name}",
            f"sync_customcrm__{m.name}",
            f"sync_keap__{k}",
        ):
            if _model(nodes, model) is None:
                missing.append(f"{m.name}: dbt has no model {model}")
        for exposure, model in (
            ("push_customcrm", f"sync_customcrm__{m.name}"),
            ("push_keap", f"sync_keap__{k}"),
        ):
            needs = nodes.get(f"exposure.crmsync.{exposure}", {}).get("depends_on", {}).get("nodes", [])
            if f"model.crmsync.{model}" not in needs:
                missing.append(f"{m.name}: the exposure {exposure} does not declare {model}")
        if f"model.crmsync.int_{m.name}__merged" not in merged_all["depends_on"]["nodes"]:
            missing.append(f"{m.name}: int_merged_fields does not union its merge")
        for side in (f"stg_keap__{k}", f"stg_customcrm__{c}"):  # how the link tables name its records
            if f"model.crmsync.{side}" not in sides_all["depends_on"]["nodes"]:
                missing.append(f"{m.name}: int_record_sides does not read {side}")
        for var in ("conflict_policy", "delete_counterparts"):
            if m.name not in project["vars"][var]:
                missing.append(f"{m.name}: dbt_project.yml has no {var}.{m.name}")
        # the docs: its property table
        if f"{{% docs mapping_table_{m.name} %}}" not in docs_page:
            missing.append(f"{m.name}: the docs page has no property table (crmsync registry --write)")
        # every field: both sides in the paired model, described
        paired = _model(nodes, f"int_{m.name}__paired")
        columns = paired["columns"] if paired else {}
        for f in m.fields:
            for side in ("keap", "customcrm"):
                if f"{side}_{f.name}" not in columns:
                    missing.append(
                        f"{m.name}.{f.name}: int_{m.name}__paired does not describe {side}_{f.name}"
                    )
            if f.parent and f.parent not in [p.name for p in mappings]:
                missing.append(f"{m.name}.{f.name}: its parent {f.parent} is no mapping")
    return missing


def test_dbt_reads_what_the_registry_renders() -> None:
    assert registry_dbt.MACRO_FILE.read_text() == registry_dbt.macro_text(), "run `crmsync registry --write`"


def test_the_rendered_registry_is_the_registry() -> None:
    """The macro is a Jinja literal of the registry's data (JSON with Jinja's true/false)."""
    text = registry_dbt.MACRO_FILE.read_text()
    literal = text[text.index("{{ return(") + len("{{ return(") : text.rindex(") }}")]
    assert json.loads(literal) == registry_dbt.as_data()
    assert json.loads(literal)["mappings"] == list(registry.mapping_names())


def test_every_layer_has_every_mapping_and_field(nodes: dict[str, Any]) -> None:
    assert missing_layers(registry.MAPPINGS, nodes) == []


def test_a_mapping_no_layer_has_is_named_layer_by_layer(nodes: dict[str, Any]) -> None:
    """A fifth mapping in the registry alone: the check names every layer that lacks it."""
    tags = Mapping(
        name="segments",
        number=5,
        keap_label="Tags",
        customcrm_label="Segment",
        keap=KeapResource(name="tags", singular="tag", cursor_field="update_time", id_filter="tag_id"),
        customcrm=CustomcrmResource("segments", "segment"),
        fields=(
            Field("name", "name", "Name"),
            Field("owner", "owner.id", "OwnerId", compare_as="reference_users"),
        ),
        natural_key="name",
    )
    missing = missing_layers((*registry.MAPPINGS, tags), nodes)
    assert all(line.startswith("segments") for line in missing)
    text = "\n".join(missing)
    for layer in (
        "the Keap source does not read tags",
        "the Customcrm source does not read segments",
        "the push does not push it",
        "dbt has no model int_segments__merged",
        "the exposure push_keap does not declare sync_keap__tags",
        "int_merged_fields does not union its merge",
        "int_record_sides does not read stg_keap__tags",
        "dbt_project.yml has no conflict_policy.segments",
        "the docs page has no property table",
        "int_segments__paired does not describe keap_name",
        "its parent users is no mapping",
    ):
        assert layer in text, layer


def test_a_field_no_layer_has_is_named(nodes: dict[str, Any]) -> None:
    """A field added to the registry alone: the paired model lacks both of its sides."""
    contacts = registry.mapping("contacts")
    grown = Mapping(
        **{**contacts.__dict__, "fields": (*contacts.fields, Field("nickname", "nickname", "Nickname"))}
    )
    others = tuple(m for m in registry.MAPPINGS if m.name != "contacts")
    assert missing_layers((*others, grown), nodes) == [
        "contacts.nickname: int_contacts__paired does not describe keap_nickname",
        "contacts.nickname: int_contacts__paired does not describe customcrm_nickname",
    ]


def test_the_push_reads_only_the_marts_its_exposures_declare(nodes: dict[str, Any]) -> None:
    """The planner's contract with dbt is the exposures: no intermediate or staging model,
    no raw table; every mart it names (`sync_*`, with a mapping's name filled in) declared."""
    declared = {
        need.rsplit(".", 1)[1]
        for name in ("push_customcrm", "push_keap")
        for need in nodes[f"exposure.crmsync.{name}"]["depends_on"]["nodes"]
    }
    code = {
        path.name: path.read_text()
        for path in (REPO / "reverse_etl").glob("*.py")
        if path.name != "state.py"  # the push's own state, and its retention
    }
    below_marts = [
        (file, found)
        for file, text in code.items()
        for found in re.findall(
            r"\b(?:intermediate\.|staging\.|raw_keap\.|raw_customcrm\.|int_|stg_)\w*", text
        )
    ]
    assert below_marts == []
    marts = {
        (file, m) for file, text in code.items() for m in re.findall(r"\bsync_(?!state\b)[a-z_{}]+", text)
    }
    assert {m for _, m in marts} >= {"sync_conflicts", "sync_new_links", "sync_keap_read_marks"}
    undeclared = [
        (file, mart)
        for file, mart in marts
        if not any(d.startswith(mart.split("{")[0]) if "{" in mart else d == mart for d in declared)
    ]
    assert undeclared == []


def test_the_core_imports_nothing_from_the_sandbox() -> None:
    """The demo is the CLI's; connectors, pipelines, the push, the registry and the run are the product."""
    offenders = []
    for folder in ("connectors", "pipelines", "reverse_etl", "registry", "support"):
        for path in (REPO / folder).rglob("*.py"):
            if "sandbox" in "".join(
                line
                for line in path.read_text().splitlines(keepends=True)
                if line.lstrip().startswith(("import ", "from "))
            ):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert Path(run.__file__).read_text().count("from sandbox") == 0, "crmsync/run.py imports the sandbox"
