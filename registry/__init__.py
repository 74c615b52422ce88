"""The mapping registry: each mapping described once, as data, and read by every layer.

A mapping is a pair of record kinds the sync links and keeps equal: its Keap resource
(how it is listed, walked, narrowed, searched and created), its Customcrm resource, and
its property table (each field's two properties, type, canonical form, direction and,
where the sync writes it to Keap, where in Keap's body the value lives). The connectors'
resource tables, both dlt sources, the push, the run, the CLI and the docs read it here;
the dbt project reads it through the macro `registry()` that `crmsync registry --write`
generates from it (`dbt_project/macros/_registry.sql`; a test fails when that file is not
what this module says). docs/architecture.md shows what adding a field or a mapping takes.

This package is the ground floor: it imports nothing of the product.
"""

from registry.mappings import (
    MAPPINGS,
    STAGES,
    CustomcrmResource,
    Field,
    KeapResource,
    KeapTarget,
    Mapping,
    SearchClause,
    by_keap_resource,
    customcrm_resource,
    keap_resource,
    mapping,
    mapping_names,
)

__all__ = [
    "MAPPINGS",
    "STAGES",
    "CustomcrmResource",
    "Field",
    "KeapResource",
    "KeapTarget",
    "Mapping",
    "SearchClause",
    "by_keap_resource",
    "customcrm_resource",
    "keap_resource",
    "mapping",
    "mapping_names",
]
