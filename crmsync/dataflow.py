"""The four property tables, from the models' own metadata (`meta.mapping_fields`
of `int_<entity>__merged` in dbt's manifest), rendered two ways:
the dbt docs (the overview page, and a block per mapping that the models include)
and the source document's own format, Sesam Talk's reStructuredText dataflow page
with every table filled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import registry
from crmsync.dbt import PROJECT_DIR, run_dbt, target_dir

DOCS_FILE = PROJECT_DIR / "models" / "_overview__docs.md"

# The dbt docs landing page. dbt docs blocks cannot include one another, so the whole
# page is generated with the property tables in it (and one block per mapping table,
# which the models' descriptions include).
OVERVIEW = """# crmsync: Keap ⇄ Customcrm

This dbt project turns what the ingest loaded from both systems (`raw_keap`,
`raw_customcrm`) and the push's own state (`sync_state`) into **link tables** and the
exact **pending changes** each system needs.

| layer | models | what they do |
|---|---|---|
| staging | `stg_keap__*`, `stg_customcrm__*`, `stg_sync_state__*` | one per source table: rename, and put every mapped value in one canonical form |
| intermediate | `int_<entity>__matched` | the link rules, in order: existing link, ExternalRefs.keap, unique natural key, else create |
| intermediate | `int_<entity>__paired` | both sides of every pair, property by property |
| intermediate | `int_<entity>__merged` | the three-way merge per field against the base; its `meta.mapping_fields` is the property table below |
| marts | `link_customers`, `link_contacts`, `link_orders`, `link_products` | what is linked to what, and why — for analysts |
| marts | `sync_customcrm__*`, `sync_keap__*` | the writes each push makes — exposures `push_customcrm`, `push_keap` |
| marts | `sync_conflicts`, `review_ambiguous_matches`, `sync_field_decisions` | conflicts, keys to review, and the bases the push advances |

## The four mappings

{mapping_tables}

## Policies (dbt vars)

| var | default | meaning |
|---|---|---|
| `conflict_policy` | `newest` for every mapping | who wins a field changed on both sides to different values: `newest` (the later update time; an exact tie goes to Keap), `keap`, or `customcrm` |
| `create_in_keap` | `false` | Sesam's reverse flow: create Keap companies, contacts and products for Customcrm-only records |
| `delete_counterparts` | `false` for every mapping | when one side of a link is deleted, delete the other (only records the link covers); otherwise the link is shown as orphaned |
| `won_opportunities_only` | `false` | sync only opportunities in a stage whose status is won (by the seed `stage_status`, else a win probability of 100) |

Set them with `crmsync sync --vars '{"conflict_policy": {"orders": "keap"}}'` or in
`dbt_project.yml`. The stage ⇄ status table is the seed `stage_status` (edit the CSV); a stage it
leaves out maps by its win probability in Keap (100 won, 0 lost, else open).
"""


@dataclass(frozen=True)
class Mapping:
    number: int
    entity: str  # the dbt entity name
    keap: str  # "Companies" as the source document names it
    customcrm: str
    rows: list[tuple[str, str, str]]  # (Keap property, Customcrm property, Customcrm data type)


MAPPINGS = tuple((m.number, m.name, m.keap_label, m.customcrm_label) for m in registry.MAPPINGS)


def manifest(db_path: Path | None = None) -> dict[str, Any]:
    """Parse the project (no database needed) and read its manifest."""
    db = db_path or Path("data/crmsync.duckdb")
    result = run_dbt(["parse"], db)
    if not result.success:
        raise RuntimeError("dbt parse failed: " + "; ".join(result.failures))
    return json.loads((target_dir(db) / "manifest.json").read_text())  # type: ignore[no-any-return]


def mappings(manifest_data: dict[str, Any]) -> list[Mapping]:
    found = []
    for number, entity, keap, customcrm in MAPPINGS:
        node = manifest_data["nodes"][f"model.crmsync.int_{entity}__merged"]
        rows = [("id", "ExternalRefs.keap", "string")]
        for field in node["config"]["meta"]["mapping_fields"]:
            rows.append(
                (field["keap_property"], field["customcrm_property"], field.get("customcrm_type", "string"))
            )
        found.append(Mapping(number, entity, keap, customcrm, rows))
    return found


def _code(text: str) -> str:
    """Property names as code; prose ("the contact's company.id") stays prose around them."""
    parts = text.split(", else ")
    return ", else ".join(_code_one(p) for p in parts)


def _code_one(text: str) -> str:
    head, sep, rest = text.partition(" (")
    if head.startswith("the ") or " " in head:
        return text
    return f"`{head}`" + (f" ({rest}" if sep else "")


def _table(mapping: Mapping) -> list[str]:
    out = [
        f"| Keap {mapping.keap} property | Customcrm {mapping.customcrm} property | Customcrm data type |",
        "|---|---|---|",
    ]
    return out + [f"| {_code(k)} | {_code(c)} | {t} |" for k, c, t in mapping.rows]


def docs_file(found: list[Mapping]) -> str:
    """The generated docs: the overview page with all four tables, and a block per table."""
    tables = []
    for mapping in found:
        tables += ["", f"### {mapping.number}. Keap {mapping.keap} ⇄ Customcrm {mapping.customcrm}", ""]
        tables += _table(mapping)
    out = [
        "<!-- generated by `crmsync dataflow --write-docs` from meta.mapping_fields of the int_*__merged models",
        "     (tests check it matches them): edit the models' YAML, not this file. -->",
        "{% docs __overview__ %}",
        OVERVIEW.strip("\n").replace("{mapping_tables}", "\n".join(tables).strip("\n")),
        "{% enddocs %}",
    ]
    for mapping in found:
        out += ["", f"{{% docs mapping_table_{mapping.entity} %}}", *_table(mapping), "{% enddocs %}"]
    return "\n".join(out) + "\n"


def restructured_text(found: list[Mapping]) -> str:
    title = "Keap to Customcrm Dataflow"
    out = [
        "=" * len(title),
        title,
        "=" * len(title),
        "",
        "This is the dataflow between Keap and Customcrm. It consists of the following flows.",
        "",
    ]
    for mapping in found:
        heading = f"Keap {mapping.keap} to Customcrm {mapping.customcrm}"
        out += [
            heading,
            "-" * len(heading),
            f"Every Keap {mapping.keap} will be synchronized with a Customcrm {mapping.customcrm}.",
            "",
            f"Once a link between a Keap {mapping.keap} and a Customcrm {mapping.customcrm} is "
            f"established, it will keep in sync between the two systems, regardless of where it is edited.",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "",
            f"   * - Keap {mapping.keap} Property",
            f"     - Customcrm {mapping.customcrm} Property",
            "     - Customcrm Data Type",
        ]
        for keap, customcrm, data_type in mapping.rows:
            out += [f"   * - {keap}", f"     - {customcrm}", f"     - {data_type}"]
        out.append("")
    return "\n".join(out)


def write_docs(db_path: Path | None = None) -> str:
    """Regenerate the docs file from the models' metadata; returns its text."""
    if not DOCS_FILE.exists():  # the models include the blocks: parse needs them to exist
        stub = "".join(f"{{% docs mapping_table_{e} %}}{{% enddocs %}}\n" for _, e, _, _ in MAPPINGS)
        DOCS_FILE.write_text("{% docs __overview__ %}{% enddocs %}\n" + stub)
    text = docs_file(mappings(manifest(db_path)))
    DOCS_FILE.write_text(text)
    return text
