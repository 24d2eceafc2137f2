"""The house rules of DESIGN.md, read from the code's own imports (module-level and
function-local alike): no import circles, lower layers never import higher ones, eval and the
workflows talk to a Locator (never to a model class), no loose modules at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "hierloc"


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    """Every hierloc module ``name`` imports (``from a import b`` counts ``a.b`` when it is a
    module, else ``a``)."""
    tree = ast.parse(MODULES[name].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hierloc"):
            out.add(_resolve(node.module))
            out |= {_resolve(f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names if a.name.startswith("hierloc")}
    return {m for m in out if m and m != name}


GRAPH = {m: imports_of(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted.
    A package's ``__init__`` importing its own submodules is not an edge back to them unless
    a submodule imports the package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(GRAPH) == []


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# package → packages it must never import (DESIGN.md's layout table)
FORBIDDEN = {
    "geometry": {
        "geo",
        "data",
        "hierarchy",
        "encoders",
        "models",
        "losses",
        "search",
        "train",
        "locate",
        "eval",
        "serve",
        "workflows",
        "cli",
        "bench",
    },
    "geo": {
        "geometry",
        "data",
        "hierarchy",
        "encoders",
        "models",
        "losses",
        "search",
        "train",
        "locate",
        "eval",
        "serve",
        "workflows",
        "cli",
        "bench",
    },
    "models": {"train", "locate", "eval", "serve", "workflows", "cli", "losses"},
    "losses": {"models", "train", "locate", "eval", "serve", "workflows", "cli"},
    "search": {"train", "models", "locate", "eval", "serve", "workflows", "cli"},
    "data": {"models", "losses", "train", "locate", "eval", "serve", "workflows", "cli"},
    "hierarchy": {"models", "train", "locate", "eval", "serve", "workflows", "cli"},
    "train": {"locate", "serve", "workflows", "cli"},
    "locate": {"serve", "workflows", "cli"},
    "eval": {"serve", "workflows", "cli"},
    "workflows": {"serve", "cli"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package):
    bad = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if _package(m) == package
        for t in targets
        if _package(t) in FORBIDDEN[package]
    )
    assert bad == []


FAMILY_MODULES = {"hierloc.locate.hierloc", "hierloc.locate.geosurge", "hierloc.locate.baselines"}


@pytest.mark.parametrize("package", ["eval", "workflows", "cli", "serve"])
def test_downstream_of_a_model_folder_only_the_locator_interface(package):
    """eval, workflows, cli and serve open model folders through ``load_locator`` and the
    types of ``locate.types`` — never a family's class (baselines' training and options are
    the exception: ``compare`` trains them, which is not reading a model folder)."""
    allowed = {"hierloc.locate.baselines"} if package in ("workflows", "cli") else set()
    bad = sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if _package(m) == package
        for t in targets
        if t in FAMILY_MODULES - allowed or t.startswith("hierloc.models")
    )
    assert bad == []


def test_no_loose_modules_at_the_top():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "checks.py", "errors.py"]
