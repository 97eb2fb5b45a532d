"""The Lambda bundles as deployed: the code asset holds the package, the layer holds every
third-party module a handler can import, built for python3.13 on arm64 from the Lambda lock file.

The layer's compiled wheels are aarch64 binaries, so the handlers cannot be imported from it here;
instead each handler's import graph is walked statically (every import, including the lazy ones in
functions, except those under ``if TYPE_CHECKING``) and checked against the staged asset folders.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from infra.functions import HANDLERS

from infra import LAMBDA_LOCK, REPO_ROOT
from tests.infra.conftest import Assembly, Synthesized
from tests.infra.templates import functions

PACKAGE = "energy_auction"
# Provided by the Lambda runtime itself, not by the layer.
RUNTIME_PROVIDED = {"awslambdaric", "bootstrap"}


def _staged(assembly: Assembly, code: dict[str, Any]) -> Path:
    """The folder CDK staged for an asset, from the S3 key the template deploys."""
    key = code["S3Key"] if "S3Key" in code else code["Content"]["S3Key"]
    folder = assembly.directory / f"asset.{key.removesuffix('.zip')}"
    assert folder.is_dir(), f"asset {key} is not staged"
    return folder


def _layer(assembly: Assembly, stack: Synthesized) -> Path:
    _, layer = stack.one("AWS::Lambda::LayerVersion")
    return _staged(assembly, layer["Properties"]) / "python"


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(source: Path, module: str) -> set[str]:
    """Absolute names of everything ``module`` imports at run time (lazy imports included)."""
    tree = ast.parse(source.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and _is_type_checking(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules, if they are
    return names


def _bound_names(source: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _third_party_imports(code: Path, handler_module: str) -> tuple[set[str], set[str]]:
    """(top-level third-party modules, missing package modules) reachable from a handler."""
    seen: set[str] = set()
    third_party: set[str] = set()
    missing: set[str] = set()
    queue = [handler_module]
    while queue:
        module = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        source = _module_file(code, module)
        if source is None:
            missing.add(module)
            continue
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        queue.extend(parents)
        for name in _imports(source, module):
            top = name.split(".")[0]
            if top == PACKAGE:
                parent, _, attribute = name.rpartition(".")
                parent_file = _module_file(code, parent) if parent else None
                if _module_file(code, name) is not None or not parent:
                    queue.append(name)
                elif parent_file is None:
                    queue.append(parent)  # reported missing when popped
                elif parent_file.name == "__init__.py" and attribute not in _bound_names(parent_file):
                    missing.add(name)  # `from package import x`: neither a submodule nor a name in it
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return third_party, missing


def _present(layer: Path, top: str) -> bool:
    return (layer / top).is_dir() or (layer / f"{top}.py").is_file() or any(layer.glob(f"{top}.*.so"))


@pytest.mark.parametrize("handler", HANDLERS)
def test_bundle_holds_every_module_the_handler_imports(assembly: Assembly, handler: str) -> None:
    stack = assembly.dev
    _, function = functions(stack)[handler]
    code = _staged(assembly, function["Properties"]["Code"])
    layer = _layer(assembly, stack)
    module, _, attribute = function["Properties"]["Handler"].rpartition(".")
    source = _module_file(code, module)
    assert source is not None, f"{module} is not in the code asset"
    assert attribute in {
        n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)
    }, f"{module} defines no {attribute}()"
    third_party, missing = _third_party_imports(code, module)
    assert not missing, f"package modules imported but not in the code asset: {sorted(missing)}"
    absent = sorted(top for top in third_party - RUNTIME_PROVIDED if not _present(layer, top))
    assert not absent, f"{handler} imports modules the layer lacks: {absent}"
    assert {"aws_lambda_powertools", "boto3"} <= third_party, "the walk reaches the handler's imports"


def test_import_walk_notices_a_missing_dependency(assembly: Assembly, tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / PACKAGE).mkdir(parents=True)
    (code / PACKAGE / "__init__.py").write_text("")
    (code / PACKAGE / "handler.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mypy_boto3_s3\n"
        "def handler(event, context):\n    import not_in_the_layer\n    from . import gone\n"
    )
    third_party, missing = _third_party_imports(code, f"{PACKAGE}.handler")
    assert third_party == {"not_in_the_layer"}
    assert missing == {f"{PACKAGE}.gone"}
    assert not _present(_layer(assembly, assembly.dev), "not_in_the_layer")


def test_code_asset_is_the_package_without_build_debris(assembly: Assembly) -> None:
    _, function = functions(assembly.dev)["api"]
    code = _staged(assembly, function["Properties"]["Code"])
    assert sorted(p.name for p in code.iterdir()) == [PACKAGE]
    assert not list(code.rglob("__pycache__"))
    assert (code / PACKAGE / "workflow" / "pipeline.asl.json").is_file()


def _pins(lock: Path) -> dict[str, str]:
    return {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", lock.read_text(), re.MULTILINE)
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def test_layer_is_the_lambda_lock_built_for_python313_arm64(assembly: Assembly) -> None:
    layer = _layer(assembly, assembly.dev)
    installed = {_normalise(d.name.split("-")[0]): d for d in layer.glob("*.dist-info")}
    pins = {_normalise(n): v for n, v in _pins(LAMBDA_LOCK).items()}
    assert set(installed) == set(pins)
    for name, version in pins.items():
        assert installed[name].name.endswith(f"-{version}.dist-info"), name
        tags = re.findall(r"^Tag: (.+)$", (installed[name] / "WHEEL").read_text(), re.MULTILINE)
        assert any(_runs_on_lambda(tag) for tag in tags), f"{name}: {tags}"


def _runs_on_lambda(tag: str) -> bool:
    """Whether a wheel tag installs on python3.13, Linux arm64."""
    python, abi, platform = tag.split("-")
    return (
        (platform == "any" or "aarch64" in platform)
        and (python in {"py3", "py2.py3", "cp313"} or (abi == "abi3" and python.startswith("cp3")))
        and abi in {"none", "abi3", "cp313"}
    )


def test_lambda_lock_pins_the_runtime_dependencies_at_the_tested_versions() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    lambda_pins = {_normalise(n): v for n, v in _pins(LAMBDA_LOCK).items()}
    dev_pins = {_normalise(n): v for n, v in _pins(REPO_ROOT / "requirements" / "dev.lock").items()}
    assert wanted <= set(lambda_pins), "run `make lock` after changing the dependencies"
    assert not {"moto", "pytest", "aws_cdk_lib", "mypy"} & set(lambda_pins), "runtime dependencies only"
    differ = {n: (v, dev_pins.get(n)) for n, v in lambda_pins.items() if dev_pins.get(n) != v}
    assert not differ, f"the Lambdas would run other versions than the tests: {differ}"
