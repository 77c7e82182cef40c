"""The package's shape: each module imports alone, none imports itself through others, none is over 400 lines,
and docs/layout.md names each."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_graph() -> dict[Path, set[Path]]:
    """Each module of medveil and the modules it imports, anywhere in it (lazy imports inside functions too):
    ``from a.b import c`` counts as importing ``a/b`` (its ``__init__`` runs) and ``a/b/c.py`` where that is a module."""
    graph = {}
    for path in (SRC / "medveil").rglob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # the package itself runs (its __init__), and each name that is a module of it
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names
                                         if _module_file(f"{node.module}.{alias.name}")]
            else:
                continue
            targets |= {f for f in map(_module_file, names) if f is not None and f != path}
        graph[path] = targets
    return graph


def circles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected groups of two or more modules (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others():
    found = circles(import_graph())
    assert not found, [[str(p.relative_to(SRC)) for p in group] for group in found]


def test_the_circle_finder_finds_one():
    a, b, c = Path("a"), Path("b"), Path("c")
    assert [set(g) for g in circles({a: {b}, b: {c}, c: {a}})] == [{a, b, c}]
    assert circles({a: {b}, b: {c}, c: set()}) == []


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(SRC)): n for path in (SRC / "medveil").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def test_the_layout_doc_names_every_module():
    layout = (SRC.parent / "docs" / "layout.md").read_text()
    unnamed = [str(path.relative_to(SRC)) for path in (SRC / "medveil").rglob("*.py")
               if path.name != "__init__.py" and path.name not in layout]
    assert not unnamed, f"docs/layout.md does not name {unnamed}"


_IMPORT_EACH_ALONE = r"""
import importlib, os, sys, traceback
# third-party libraries first, so that each child below starts with them loaded and no medveil module
import numpy, torch, scipy, skimage, pydicom, nibabel, PIL, fastapi, typer  # noqa: F401
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(name, traceback.format_exc().splitlines()[-1], flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to start each import from the same clean state")
def test_each_module_imports_alone():
    names = sorted(".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
                   for path in (SRC / "medveil").rglob("*.py") if path.name != "__main__.py")  # that one runs the CLI
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, *names], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
