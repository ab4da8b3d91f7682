"""The core's layout: packages by stage, imports only down (or to the shared base), no import cycle.

Every `import`/`from ... import` of a `seer` module is read from the source, lazy ones inside functions included,
so an import that only runs on one code path still counts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"

# Bottom to top. A module may import its own package and any layer below, never a layer above or a sibling of its
# own layer. The first layer is the shared base (the top-level modules named there and the package root): base
# modules import only the base.
LAYERS = [
    {"seer", "seer.settings", "seer.errors", "seer.files", "seer.cache", "seer.memory", "seer.devices",
     "seer.housekeeping", "seer.metrics", "seer.sample_data"},
    {"seer.imaging"},
    {"seer.reasoning"},
    {"seer.segmentation"},
    {"seer.state_db"},
    {"seer.loop"},
    {"seer.pipeline"},
    {"seer.active_learning", "seer.pacs", "seer.training", "seer.review"},
    {"seer.commands"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: its package under seer, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def rank(unit: str) -> int:
    for number, layer in enumerate(LAYERS):
        if unit in layer:
            return number
    raise AssertionError(f"{unit} is in no layer of tests/test_layout.py: add it where it belongs")


def seer_imports(path: Path) -> set[str]:
    """Absolute names of the seer modules (or names in them) a file imports, anywhere in the file."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "seer"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "seer":
                found |= {f"{name}.{a.name}" for a in node.names} if name == "seer" else {name}
    return found


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): seer_imports(p) for p in sorted((LIB / "seer").rglob("*.py"))}


def test_every_module_imports_only_its_own_package_or_layers_below():
    upward = []
    for module, imports in all_modules().items():
        mine = unit_of(module)
        for target in imports:
            theirs = unit_of(target)
            if theirs == mine or rank(theirs) == rank(mine) == 0:  # its own package, or base to base
                continue
            if rank(theirs) >= rank(mine):
                upward.append(f"{module} imports {target} ({theirs} is not below {mine})")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    modules = all_modules()
    graph = {}
    for module, imports in modules.items():
        edges = set()
        for target in imports:
            while target and target not in modules:  # `from seer.x import name` -> seer.x
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", sorted({unit_of(m) for m in all_modules() if m.count(".") >= 1
                                            and (LIB / Path(*unit_of(m).split("."))).is_dir()}))
def test_each_package_says_what_lives_there(package):
    init = LIB / Path(*package.split(".")) / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 15, f"{init} needs a docstring that says what lives in the package"


def test_the_checker_reads_lazy_relative_and_package_imports(tmp_path, monkeypatch):
    """The reader itself: an import inside a function, a relative import and `from seer import x` all count."""
    package = tmp_path / "seer" / "reasoning"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(
        "from .targets import LabelTable\n"
        "def later():\n    from seer.loop.rewards import Rewarder\n"
        "from seer import pipeline\n")
    monkeypatch.setattr(sys.modules[__name__], "LIB", tmp_path)
    found = seer_imports(package / "probe.py")
    assert found == {"seer.reasoning.targets", "seer.loop.rewards", "seer.pipeline"}
    assert all(rank(unit_of(name)) > rank("seer.reasoning") for name in found - {"seer.reasoning.targets"})
