"""The folders show the flow: the shared kernel (`core`) imports none of the parts, and no part imports
what composes them (`citywatch`: the command line, the roles, the embedded runtime)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARTS = ("ingest", "processors", "store", "api")


def imported_packages(package: str) -> dict[str, set[str]]:
    """Module file -> the top-level packages it imports (at any depth, lazily or not)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def test_the_kernel_imports_none_of_the_parts_nor_what_composes_them() -> None:
    offending = {module: sorted(names & {*PARTS, "citywatch"})
                 for module, names in imported_packages("core").items() if names & {*PARTS, "citywatch"}}
    assert offending == {}


@pytest.mark.parametrize("part", PARTS)
def test_no_part_imports_what_composes_it(part: str) -> None:
    offending = [module for module, names in imported_packages(part).items() if "citywatch" in names]
    assert offending == []
