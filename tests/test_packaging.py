"""What a wheel carries: the presets as package data, and a declared distribution for every import."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import sarco_nn
from sarco_nn.presets import PRESET_DIR, available_presets, load_preset

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"sarco_nn", "dataset_conversion"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for folder in ("sarco_nn", "dataset_conversion"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - FIRST_PARTY - {"__future__"}


def test_presets_live_inside_the_package_and_are_declared_package_data():
    package_dir = Path(sarco_nn.__file__).resolve().parent
    assert PRESET_DIR.resolve().parent == package_dir
    assert {"default", "cpu", "smoke"} <= set(available_presets())
    assert all(load_preset(name)["name"] == name for name in available_presets())
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["sarco_nn"]
    shipped = {p.relative_to(package_dir).as_posix() for pattern in patterns for p in package_dir.glob(pattern)}
    assert {f"plans/{name}.json" for name in available_presets()} <= shipped


def test_every_imported_third_party_package_is_declared():
    project = PYPROJECT["project"]
    declared = {_requirement_name(s) for s in project["dependencies"]}
    declared |= {_requirement_name(s) for extra in project["optional-dependencies"].values() for s in extra}
    distributions = packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_modules()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_top_level_plans_is_the_shipped_preset_folder_not_a_copy():
    """`plans/` at the checkout's top (DESIGN.md's layout) is a link to the package data that ships
    in the wheel, so there is one preset folder, never two that drift apart."""
    from pathlib import Path

    from sarco_nn.presets import PRESET_DIR

    top = Path(__file__).resolve().parents[1] / "plans"
    assert top.is_symlink() and top.resolve() == PRESET_DIR.resolve()
