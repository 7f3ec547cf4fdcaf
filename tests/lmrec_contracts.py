"""An import-linter contract type for submodules of external packages (`torch.distributed`).

import-linter's own `forbidden` contract can forbid an external package only as a whole
(`ray`), because its graph keeps external packages at the top level. Models must import
`torch` but never `torch.distributed`: this contract reads the import lines the graph keeps
for each `torch` import and checks them, for every module the source packages import,
directly or through other lmrec modules (transitively).

Registered in pyproject.toml (`[tool.importlinter] contract_types`); `lint-imports` runs with
`tests/` on PYTHONPATH (the Makefile's `lint` target and tests/unit/test_layout.py do so).
"""

from __future__ import annotations

import re

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class ForbiddenSubmoduleContract(Contract):
    """Source packages never import the named submodules of external packages, even indirectly.

    Options: `source_modules` (lmrec packages), `forbidden_submodules` (dotted names such as
    `torch.distributed`; the external top-level package must be in the graph, so the session needs
    `include_external_packages = true`).
    """

    type_name = "forbidden_submodules"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_submodules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        violations: list[dict[str, object]] = []
        for forbidden in self.forbidden_submodules:  # type: ignore[attr-defined]
            top, _, rest = str(forbidden).partition(".")
            # `import torch.distributed`, `from torch.distributed.fsdp import x`, `from torch import distributed`
            pattern = re.compile(
                rf"(?:\b{re.escape(top)}\.{re.escape(rest)}\b)|(?:from\s+{re.escape(top)}\s+import\s+.*\b{re.escape(rest.split('.')[0])}\b)"
            )
            for source in self.source_modules:  # type: ignore[attr-defined]
                source = str(source)
                starts = {source} | graph.find_descendants(source)
                reached: set[str] = set(starts)
                for module in starts:
                    reached |= graph.find_upstream_modules(module)  # what `module` imports, transitively
                for module in sorted(reached):
                    if top not in graph.modules or not graph.direct_import_exists(importer=module, imported=top):
                        continue
                    for detail in graph.get_import_details(importer=module, imported=top):
                        line = str(detail["line_contents"])
                        if pattern.search(line):
                            chain = _chain_from(graph, starts, module)
                            violations.append(
                                {"source": source, "chain": chain, "line": f"{module}:{detail['line_number']}: {line}"}
                            )
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for v in check.metadata["violations"]:
            output.print_error(f"{v['source']} reaches a forbidden import: {' -> '.join(v['chain'])}", bold=True)
            output.indent_cursor()
            output.print(str(v["line"]))
            output.new_line()


def _chain_from(graph: ImportGraph, starts: set[str], module: str) -> list[str]:
    if module in starts:
        return [module]
    for start in sorted(starts):
        chain = graph.find_shortest_chain(importer=start, imported=module)
        if chain:
            return list(chain)
    return [module]
