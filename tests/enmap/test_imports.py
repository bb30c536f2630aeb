"""The enmap package has no import cycle: each module imports only the ones below it (module
level or inside functions), and each imports first in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import spectralearth.enmap as package
from tests.helpers import REPO

PACKAGE = "spectralearth.enmap"
FOLDER = Path(package.__file__).parent
# Each module and what it may import of the package: scene <- values, checks <- l2a, generic
# <- archive <- view.
ALLOWED = {
    "scene": set(),
    "values": {"scene"},
    "checks": {"scene"},
    "l2a": {"scene", "values", "checks"},
    "generic": {"scene", "values", "checks"},
    "archive": {"scene", "l2a", "generic"},
    "view": {"scene", "checks", "archive"},
}


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith(PACKAGE + "."):
                found.add(name[len(PACKAGE) + 1 :].split(".")[0])
    return found


def test_every_module_is_listed_and_the_graph_has_no_cycle():
    modules = {p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__"}
    assert modules == set(ALLOWED), "a module was added or removed: place it in ALLOWED"
    graph = {m: _imports(FOLDER / f"{m}.py") for m in modules}
    for module, deps in graph.items():
        assert deps <= ALLOWED[module], f"{module} imports {sorted(deps - ALLOWED[module])}"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the assertion above catches it first
        pytest.fail(f"import cycle: {exc.args[1]}")
    assert not _imports(FOLDER / "__init__.py"), "the package __init__ imports nothing"


def test_walker_sees_imports_inside_functions(tmp_path):
    """The old cycle hid in a function-level import (product.py -> generic.py)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from spectralearth.enmap.generic import open_generic\n")
    assert _imports(f) == {"generic"}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    proc = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}.{module}"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
