"""The layering of ARCHITECTURE.md, checked on the source: imports point one way, no cycles.

Units are the top-level modules of each package (`sarco_nn.inference`, `sarco_nn.l3`,
`dataset_conversion.convert`, ...). A package's `__main__` is an entry point (command layer) of
its own. Every import counts, the ones inside functions too: a lazy import still couples modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sarco_nn", "dataset_conversion")

#: Commands: may import anything. Nothing below them may import them.
COMMAND_UNITS = {"sarco_nn.cli", "sarco_nn.commands", "sarco_nn.api"}
#: io / constants: import only each other (and third-party code), never the library above them.
BASE_UNITS = {"sarco_nn.constants", "sarco_nn.errors", "sarco_nn.status", "sarco_nn.atomic", "sarco_nn.hashing",
              "sarco_nn.devices", "sarco_nn.windowing", "sarco_nn.schedules", "sarco_nn.run_lock"}

#: Known violations another branch removes at merge. Each entry must still be true (the test below
#: fails once it is not), so the list can only shrink: delete an entry when its fix lands.
PENDING_CYCLES: set[frozenset[str]] = set()  # the phantom split removed the last cycle
PENDING_PRIVATE: set[tuple[str, str]] = set()  # l3 now uses the one public case-id rule (sarco_nn.cases)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[-1] == "__main__":
        return module
    return ".".join(parts[:2])


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, imported name or '') for every first-party import."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found += [(module, a.name, "") for a in node.names if _unit(a.name)]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _unit(node.module):
                    for alias in node.names:
                        target = f"{node.module}.{alias.name}"
                        found.append((module, target, "") if _exists(target) else (module, node.module, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, target, _ in _imports():
        a, b = _unit(source), _unit(target)
        if a and b and a != b:
            graph.setdefault(a, set()).add(b)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_top_level_modules():
    cycles = set(_cycles(_graph()))
    assert cycles - PENDING_CYCLES == set(), f"import cycles: {[sorted(c) for c in cycles - PENDING_CYCLES]}"
    assert PENDING_CYCLES <= cycles, f"fixed, remove from PENDING_CYCLES: {PENDING_CYCLES - cycles}"


def test_library_never_imports_the_command_layer():
    upward = sorted({(s, t) for s, t, _ in _imports()
                     if _unit(t) in COMMAND_UNITS and _unit(s) not in COMMAND_UNITS and not s.endswith("__main__")})
    assert upward == [], f"library modules importing commands/cli: {upward}"
    # an entry point (`python -m sarco_nn.pretraining`, what torchrun launches) wires its own command,
    # not the whole `sarco` app with every command behind it
    whole_app = sorted({s for s, t, _ in _imports() if s.endswith("__main__") and _unit(t) == "sarco_nn.cli"})
    assert whole_app == [], f"entry points importing sarco_nn.cli: {whole_app}"


def test_io_and_constants_import_nothing_above_them():
    upward = sorted({(s, t) for s, t, _ in _imports() if _unit(s) in BASE_UNITS and _unit(t) not in BASE_UNITS})
    assert upward == [], f"base modules importing the library: {upward}"


def test_no_private_names_across_modules():
    private = set()
    for source, target, name in _imports():
        last = name or target.rsplit(".", 1)[-1]
        if last.startswith("_") and not last.startswith("__") and _unit(source) != _unit(target):
            private.add((_unit(source), f"{target}.{name}" if name else target))
    assert private - PENDING_PRIVATE == set(), f"private names imported across modules: {sorted(private - PENDING_PRIVATE)}"
    assert PENDING_PRIVATE <= private, f"fixed, remove from PENDING_PRIVATE: {PENDING_PRIVATE - private}"


def test_the_graph_sees_lazy_imports():
    """Guard of the checks above: an import inside a function is found (model lookup → trainer names)."""
    assert "sarco_nn.training" in _graph()["sarco_nn.model_store"]
    assert ("sarco_nn.model_store", "sarco_nn.training.names", "TRAINERS") in _imports()


@pytest.mark.parametrize("code", [
    "import sarco_nn.constants",
    "import sarco_nn.status",
    "import sarco_nn.thresholds",
    "import sarco_nn.predict_options",  # the api imports it at once
    "import sarco_nn.training.names, sarco_nn.devices, sarco_nn.schedules, sarco_nn.windowing",
    # configuration reads a preset's network without importing the network (torch + MONAI)
    "from sarco_nn.presets import load_preset, smit_network_config; smit_network_config(load_preset('cpu'))",
])
def test_light_modules_do_not_import_torch(code):
    probe = f"import sys; {code}; heavy = [m for m in ('torch', 'monai', 'nnunetv2') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.strip() == "[]", f"{code!r} imported {out.stdout.strip()}"


def test_resenc_block_counts_come_from_nnunets_resenc_planner():
    """Not the plain planner's counts (2 per stage), and as long as nnU-Net's ResEnc defines them."""
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners

    from sarco_nn.models.resenc import resenc_blocks_per_stage

    encoder, decoder = resenc_blocks_per_stage(6)
    assert len(encoder) == 6 and len(decoder) == 5
    assert encoder[0] == 1 and encoder != [2] * 6 and max(encoder) > 2 and set(decoder) == {1}
    source = Path(residual_encoder_unet_planners.__file__).read_text()
    assert f"UNet_blocks_per_stage_encoder = {tuple(resenc_blocks_per_stage(13)[0])}" in source
    with pytest.raises(ValueError, match="stages at most"):
        resenc_blocks_per_stage(99)


PUBLIC_PACKAGES = ("models", "l3", "classification", "pretraining")
PUBLIC_MODULES = ("api", "atomic", "run_lock", "hashing", "devices", "windowing", "schedules", "postprocessing", "overlay",
                  "training.names", "models.smit_config")


def _public_modules() -> list[str]:
    names = [f"sarco_nn.{m}" for m in PUBLIC_MODULES]
    for package in PUBLIC_PACKAGES:
        names += sorted(_module_name(p) for p in (ROOT / "sarco_nn" / package).glob("*.py")
                        if p.name not in ("__init__.py", "__main__.py"))
    return names


@pytest.mark.parametrize("module", _public_modules())
def test_public_modules_declare_their_surface(module):
    """`__all__` says what a module offers; every name in it exists (a rename cannot leave it stale)."""
    import importlib

    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported, f"{module} has no __all__"
    missing = [name for name in exported if not hasattr(mod, name)]
    assert missing == [], f"{module}.__all__ names missing objects: {missing}"
