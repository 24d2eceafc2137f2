"""The house rules of DESIGN.md, from the code's own imports (module-level and function-local
alike): no import circles, lower layers never import higher ones, and nothing downstream of a
model folder imports a family's module. Exit status 1 with the offending imports listed.

    python scripts/check_imports.py        (run by ``make test``)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

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
    "config": {"train", "locate", "eval", "serve", "workflows", "cli", "bench"},
    "locate": {"train", "serve", "workflows", "cli"},
    "eval": {"train", "serve", "workflows", "cli"},
    "workflows": {"serve", "cli"},
}


FAMILY_MODULES = {"hierloc.locate.hierloc", "hierloc.locate.geosurge", "hierloc.locate.baselines"}


DOWNSTREAM = ("eval", "workflows", "cli", "serve")


def violations() -> list[str]:
    """Every broken rule, one line each."""
    out = [f"import circle: {' → '.join(c)}" for c in cycles(GRAPH)]
    for m, targets in sorted(GRAPH.items()):
        pkg = _package(m)
        for t in sorted(targets):
            if _package(t) in FORBIDDEN.get(pkg, ()):
                out.append(f"{m} imports {t} (a higher layer)")
            allowed = {"hierloc.locate.baselines"} if pkg in ("workflows", "cli") else set()
            if pkg in DOWNSTREAM and (
                t in FAMILY_MODULES - allowed or t.startswith("hierloc.models")
            ):
                out.append(f"{m} imports {t} (downstream code uses load_locator and locate.types)")
    return out


def main() -> int:
    bad = violations()
    for line in bad:
        print(line)
    print(
        f"{len(MODULES)} modules, {sum(map(len, GRAPH.values()))} imports: "
        f"{'OK' if not bad else f'{len(bad)} problems'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
