"""The package's layout rules that import-linter does not check (its layer contract runs as `lint-imports` in the
test command): no module imports another module's private name, and every module is one the contract places."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import hf_mistral_kit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(hf_mistral_kit.__file__).parent


def modules() -> dict[str, Path]:
    found = {"hf_mistral_kit": PACKAGE / "__init__.py"}
    for module in pkgutil.walk_packages([str(PACKAGE)], "hf_mistral_kit."):
        spec = importlib.util.find_spec(module.name)
        found[module.name] = Path(spec.origin)
    return found


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an `from ... import` names (relative to `module`)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if modules()[module].name != "__init__.py":  # a module's package, or the package itself
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def private_imports(edited: dict[str, str] | None = None) -> list[str]:
    """`from x import _name` of a kit module, and `module._name` of a kit module imported as a name (`edited`: module
    name -> source replacing the file's)."""
    found = []
    known = modules()
    for module, path in known.items():
        tree = ast.parse((edited or {}).get(module) or path.read_text(encoding="utf-8"))
        imported_modules = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = resolve(module, node)
            if not source.startswith("hf_mistral_kit"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and source != module:
                    found.append(f"{module}: from {source} import {alias.name}")
                if f"{source}.{alias.name}" in known:
                    imported_modules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_name():
    assert private_imports() == []


def test_the_check_finds_a_private_import():
    """The check above can fail: a module that reaches into another's private name is reported."""
    source = (PACKAGE / "chat" / "plain.py").read_text(encoding="utf-8")
    source += "\nfrom .reading import _lax_bool\nfrom . import reading\nreading._TRUE\n"
    assert private_imports({"hf_mistral_kit.chat.plain": source}) == [
        "hf_mistral_kit.chat.plain: from hf_mistral_kit.chat.reading import _lax_bool",
        "hf_mistral_kit.chat.plain: reading._TRUE",
    ]


def test_the_layer_contract_places_every_module():
    """import-linter's layers contract is exhaustive: every top-level module or package of the kit is in a layer."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    assert layers["exhaustive"] is True and layers["containers"] == ["hf_mistral_kit"]
    placed = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    top_level = {name.split(".")[1] for name in modules() if name != "hf_mistral_kit"}
    assert placed == top_level
