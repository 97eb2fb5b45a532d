"""The package's layering, read from its source: no import cycle, ports that import only the model
modules, and a domain that imports no AWS library."""

from __future__ import annotations

import ast
from pathlib import Path

import energy_auction

PACKAGE = Path(energy_auction.__file__).parent
MODELS = {"energy_auction.orders", "energy_auction.market", "energy_auction.notifications"}
DOMAIN = MODELS | {
    "energy_auction.intake",
    "energy_auction.pipeline",
    "energy_auction.digest",
    "energy_auction.ports",
}
AWS_LIBRARIES = ("boto3", "botocore", "aws_lambda_powertools", "moto", "mypy_boto3")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("energy_auction", *[p for p in parts if p != "__init__"]))


def imports() -> dict[str, set[str]]:
    """Every module's imports, wherever they stand (top level, TYPE_CHECKING or in a function)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[_module(path)] = names
    return found


def test_no_module_of_the_package_imports_itself_back_through_others() -> None:
    every = imports()
    graph = {m: {d for d in deps if d in every and d != m} for m, deps in every.items()}
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_ports_import_only_the_model_modules() -> None:
    ours = {m for m in imports()["energy_auction.ports"] if m.startswith("energy_auction")}
    assert ours <= MODELS


def test_the_domain_imports_no_aws_library() -> None:
    graph = imports()
    offending = {
        module: sorted(d for d in graph[module] if d.split(".")[0] in AWS_LIBRARIES)
        for module in DOMAIN
        if any(d.split(".")[0] in AWS_LIBRARIES for d in graph[module])
    }
    assert offending == {}
