"""The layer rules of pyproject.toml ([tool.importlinter]) hold, and a broken one is caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_import_goes_downward_and_no_contract_is_broken() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    for name in ("care_serve", "benchmarks"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "care_serve" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport care_serve.serving.manager  # upward\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "care_serve.errors -> care_serve.serving.manager" in result.stdout


def _cycles(graph: object, modules: list[str]) -> list[list[str]]:
    """The import cycles among ``modules`` (strongly connected components of two or more)."""
    imports = {m: graph.find_modules_directly_imported_by(m) & set(modules) for m in modules}  # type: ignore[attr-defined]
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in imports[module]:
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in order:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    import grimp

    graph = grimp.build_graph("care_serve")
    modules = sorted(m for m in graph.modules if not m.startswith("care_serve.grpc_gen"))
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    class Graph:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, module: str) -> set[str]:
            return self.edges[module]

    assert _cycles(Graph(), ["a", "b", "c", "d"]) == [["a", "b", "c"]]
