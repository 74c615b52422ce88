"""The property tables, one per mapping, from the registry (`registry/mappings.py`, which the merge
models read too), rendered two ways:
the dbt docs (the overview page, and a block per mapping that the models include)
and the source document's own format, Sesam Talk's reStructuredText dataflow page
with every table filled.
"""

from __future__ import annotations

import dataclasses
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
| staging | `stg_keap__*`, `stg_customcrm__*`, `stg_sync_state__*` | one per source table: rename, and put every mapped value in one canonical form (those of records are incremental tables: each loaded version of a payload is parsed once) |
| intermediate | `int_<entity>__matched` | the link rules, in order: existing link, ExternalRefs.keap, unique natural key, else create |
| intermediate | `int_<entity>__paired` | both sides of every pair, property by property |
| intermediate | `int_<entity>__merged` | the three-way merge per field against the base, over the property table below (`registry/mappings.py`) |
| marts | {link_tables} | what is linked to what, and why — for analysts |
| marts | `sync_customcrm__*`, `sync_keap__*` | the writes each push makes — exposures `push_customcrm`, `push_keap` |
| marts | `sync_conflicts`, `review_ambiguous_matches`, `sync_field_decisions` | conflicts, keys to review, and the bases the push advances |

## The mappings

{mapping_tables}

## Policies (dbt vars)

| var | default | meaning |
|---|---|---|
| `conflict_policy` | `newest` for every mapping | who wins a field changed on both sides to different values: `newest` (the later update time; an exact tie goes to Keap), `keap`, or `customcrm` |
| `create_in_keap` | `false` | Sesam's reverse flow: create Keap companies, contacts and products for Customcrm-only records |
| `delete_counterparts` | `false` for every mapping | when one side of a link is deleted, delete the other (only records the link covers); otherwise the link is shown as orphaned |
| `won_opportunities_only` | `false` | sync only opportunities in a stage whose status is won (by the seed `stage_status`, else a win probability of 100) |

Set them with `crmsync sync --vars '{"conflict_policy": {"orders": "keap"}}'` (the mappings
not named keep their default; a name that is no mapping stops the build) or in
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
    directions: list[str] = dataclasses.field(default_factory=list)  # per row: which way it goes, the rule


DIRECTIONS = {
    "both": "both ways; a field changed on both sides goes by `conflict_policy`",
    "to_customcrm": "Keap → Customcrm only: Keap's value always wins, nothing is written to Keap",
    "derived": "Keap → Customcrm, derived from the Keap value, never merged on its own",
}
ID_DIRECTION = "the link: set in Customcrm by the sync, never changed"


def manifest(db_path: Path | None = None) -> dict[str, Any]:
    """Parse the project (no database needed) and read its manifest."""
    db = db_path or Path("data/crmsync.duckdb")
    result = run_dbt(["parse"], db)
    if not result.success:
        raise RuntimeError("dbt parse failed: " + "; ".join(result.failures))
    return json.loads((target_dir(db) / "manifest.json").read_text())  # type: ignore[no-any-return]


def mappings() -> list[Mapping]:
    """The property tables, with the link itself (the `id` row) first."""
    found = []
    for m in registry.MAPPINGS:
        rows = [("id", "ExternalRefs.keap", "string")]
        directions = [ID_DIRECTION] + [DIRECTIONS[f.direction] for f in m.fields]
        rows += [(f.keap_property, f.customcrm_property, f.customcrm_type) for f in m.fields]
        found.append(Mapping(m.number, m.name, m.keap_label, m.customcrm_label, rows, directions))
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
        f"| Keap {mapping.keap} property | Customcrm {mapping.customcrm} property | Customcrm data type "
        "| direction |",
        "|---|---|---|---|",
    ]
    return out + [
        f"| {_code(k)} | {_code(c)} | {t} | {d} |"
        for (k, c, t), d in zip(mapping.rows, mapping.directions, strict=True)
    ]


def docs_file(found: list[Mapping]) -> str:
    """The generated docs: the overview page with every mapping's table, and a block per table."""
    tables = []
    for mapping in found:
        tables += ["", f"### {mapping.number}. Keap {mapping.keap} ⇄ Customcrm {mapping.customcrm}", ""]
        tables += _table(mapping)
    out = [
        "<!-- generated by `crmsync dataflow --write-docs` from registry/mappings.py",
        "     (tests check it matches it): edit the registry, not this file. -->",
        "{% docs __overview__ %}",
        OVERVIEW.strip("\n")
        .replace("{mapping_tables}", "\n".join(tables).strip("\n"))
        .replace("{link_tables}", ", ".join(f"`link_{m.entity}`" for m in found)),
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


LINEAGE_FILE = PROJECT_DIR.parent / "docs" / "lineage.md"
PUSH_TARGETS = (("push_customcrm", "Customcrm"), ("push_keap", "Keap"))
LAYERS = (("source", "raw tables"), ("seed", "seeds"), ("staging", "staging"),
          ("intermediate", "intermediate"), ("marts", "marts"))  # fmt: skip


def _layer(node_id: str, node: dict[str, Any]) -> str:
    kind = node_id.split(".")[0]
    if kind in ("source", "seed"):
        return kind
    fqn = node.get("fqn") or []
    return next((layer for layer in ("staging", "intermediate", "marts") if layer in fqn), "marts")


def _label(node_id: str, node: dict[str, Any]) -> str:
    if node_id.startswith("source."):
        return f"{node['source_name']}.{node['name']}"
    return str(node["name"])


def _upstream(manifest_data: dict[str, Any], exposure: str) -> set[str]:
    """Every model, seed and source an exposure is built from (no tests)."""
    parents = manifest_data["parent_map"]
    seen: set[str] = set()
    todo = [f"exposure.crmsync.{exposure}"]
    while todo:
        for parent in parents.get(todo.pop(), []):
            if parent not in seen and not parent.startswith("test."):
                seen.add(parent)
                todo.append(parent)
    return seen


def lineage(manifest_data: dict[str, Any]) -> str:
    """docs/lineage.md: per push target, the models, seeds and raw tables it is built from
    (no tests), as a Mermaid flowchart per target, left to right, grouped by layer."""
    nodes = {**manifest_data["nodes"], **manifest_data["sources"], **manifest_data["exposures"]}
    parents = manifest_data["parent_map"]
    out = [
        "<!-- generated by `crmsync dataflow --write-docs` from dbt's manifest (tests check it is current) -->",
        "# Lineage, per push target",
        "",
        "What each push reads, from the raw tables the ingest loads (left) to the push (right):",
        "models, seeds and sources, without the data tests (the dbt docs, `crmsync docs`, show",
        "those too). Rendered by GitHub and most Markdown viewers (Mermaid).",
    ]
    for exposure, system in PUSH_TARGETS:
        start = f"exposure.crmsync.{exposure}"
        seen = _upstream(manifest_data, exposure)
        ids = {n: n.split(".", 2)[-1].replace(".", "__") for n in [*seen, start]}
        out += ["", f"## The push to {system} (exposure `{exposure}`)", "",
                f"![the models the push to {system} reads]({lineage_svg_file(exposure).name})",
                "", "The same as a Mermaid flowchart:", "", "```mermaid", "flowchart LR"]  # fmt: skip
        for layer, title in LAYERS:
            members = sorted(n for n in seen if _layer(n, nodes[n]) == layer)
            if members:
                out.append(f"  subgraph {layer}[{title}]")
                out += [f'    {ids[n]}["{_label(n, nodes[n])}"]' for n in members]
                out.append("  end")
        out.append(f'  {ids[start]}(["{exposure}"])')
        edges = sorted(
            f"  {ids[p]} --> {ids[n]}" for n in [*seen, start] for p in parents.get(n, []) if p in seen
        )
        out += [*edges, "```"]
    return "\n".join(out) + "\n"


def lineage_svg_file(exposure: str) -> Path:
    return LINEAGE_FILE.with_name(f"lineage-{exposure}.svg")


SVG_COLOURS = {"source": "#5fb825", "seed": "#8a9a5b", "staging": "#0094b3", "intermediate": "#007a94",
               "marts": "#005f73", "exposure": "#ff694b"}  # fmt: skip
SVG_LEGEND = (("source", "raw table"), ("seed", "seed"), ("staging", "staging"),
              ("intermediate", "intermediate"), ("marts", "mart"), ("exposure", "push"))  # fmt: skip


def lineage_svg(manifest_data: dict[str, Any], exposure: str, title: str) -> str:
    """One push target's lineage as a standalone SVG, left to right: each node in the column of
    its longest path from the raw tables, ordered within its column by where its parents are
    (a few barycentre sweeps keep crossings down), coloured by layer. Deterministic, so the
    checked-in picture can be compared with a fresh one."""
    from xml.sax.saxutils import escape

    nodes = {**manifest_data["nodes"], **manifest_data["sources"], **manifest_data["exposures"]}
    start = f"exposure.crmsync.{exposure}"
    members = _upstream(manifest_data, exposure) | {start}
    parents = {n: sorted(p for p in manifest_data["parent_map"].get(n, []) if p in members) for n in members}
    children: dict[str, list[str]] = {n: [] for n in members}
    for node, ups in parents.items():
        for parent in ups:
            children[parent].append(node)

    depth: dict[str, int] = {}

    def depth_of(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((depth_of(p) for p in parents[node]), default=-1)
        return depth[node]

    for node in sorted(members):
        depth_of(node)
    depth[start] = max(depth[n] for n in members if n != start) + 1
    columns: list[list[str]] = [[] for _ in range(depth[start] + 1)]
    for node in sorted(
        members, key=lambda n: (_layer(n, nodes[n]) if n != start else "z", _label(n, nodes[n]))
    ):
        columns[depth[node]].append(node)

    def sweep(order: list[list[str]], neighbours: dict[str, list[str]], columns_in: range) -> None:
        for col in columns_in:
            place = {n: i for column in order for i, n in enumerate(column)}
            keyed = []
            for i, node in enumerate(order[col]):
                near = [place[m] for m in neighbours[node]]
                keyed.append((sum(near) / len(near) if near else float(i), i, node))
            order[col] = [node for *_, node in sorted(keyed)]

    for _ in range(4):
        sweep(columns, parents, range(1, len(columns)))
        sweep(columns, children, range(len(columns) - 2, -1, -1))

    char, row, box_h, pad, gap = 7.0, 26, 18, 8, 44
    widths = [
        max(len(_label(n, nodes[n]) if n != start else exposure) for n in col) * char + 2 * pad
        for col in columns
    ]
    top, left = 56.0, 10.0
    height = top + max(len(col) for col in columns) * row + 40
    xs: list[float] = []
    x = left
    for w in widths:
        xs.append(x)
        x += w + gap
    width = int(x - gap + left)
    tallest = max(len(col) for col in columns)
    where: dict[str, tuple[float, float, float]] = {}
    for c, col in enumerate(columns):
        offset = (tallest - len(col)) * row / 2
        for r, node in enumerate(col):
            where[node] = (xs[c], top + offset + r * row, widths[c])

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{int(height)}" '
        f'viewBox="0 0 {width} {int(height)}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        'font-size="12">',
        "<!-- generated from dbt's manifest by crmsync dataflow, its write-docs option (tests check it is current) -->",
        f'<rect width="{width}" height="{int(height)}" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold" fill="#222">{escape(title)}</text>',
    ]
    lx = left
    for layer, name in SVG_LEGEND:
        out.append(f'<rect x="{lx}" y="32" width="12" height="12" rx="2" fill="{SVG_COLOURS[layer]}"/>')
        out.append(f'<text x="{lx + 16}" y="42" fill="#222">{name}</text>')
        lx += 16 + len(name) * char + 18
    out.append('<g fill="none" stroke="#9aa5b1" stroke-width="1">')
    for node in sorted(members):
        x2, y2, _ = where[node]
        for parent in parents[node]:
            x1, y1, w1 = where[parent]
            a, b = (x1 + w1, y1 + box_h / 2), (x2, y2 + box_h / 2)
            mid = (a[0] + b[0]) / 2
            out.append(f'<path d="M{a[0]:.0f},{a[1]:.0f} C{mid:.0f},{a[1]:.0f} {mid:.0f},{b[1]:.0f} '
                       f'{b[0]:.0f},{b[1]:.0f}"/>')  # fmt: skip
    out.append("</g>")
    for node in sorted(members):
        x, y, w = where[node]
        layer = "exposure" if node == start else _layer(node, nodes[node])
        label = exposure if node == start else _label(node, nodes[node])
        out.append(f'<g><title>{escape(node)}</title><rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" '
                   f'height="{box_h}" rx="3" fill="{SVG_COLOURS[layer]}"/>'
                   f'<text x="{x + pad:.0f}" y="{y + 13:.0f}" fill="#ffffff">{escape(label)}</text></g>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_docs(db_path: Path | None = None) -> str:
    """Regenerate the docs file from the registry, and docs/lineage.md with its two pictures
    (lineage-push_*.svg) from dbt's manifest; returns the docs file's text."""
    text = docs_file(mappings())
    DOCS_FILE.write_text(text)
    manifest_data = manifest(db_path)
    LINEAGE_FILE.write_text(lineage(manifest_data))
    for exposure, system in PUSH_TARGETS:
        title = f"What the push to {system} reads (exposure {exposure}), from the raw tables"
        picture = lineage_svg_file(exposure)
        picture.write_text(lineage_svg(manifest_data, exposure, title))
        picture.chmod(0o644)  # a document of the repository, whatever the private umask of the CLI
    return text
