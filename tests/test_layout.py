"""The house rules (``scripts/check_imports.py``, also run by ``make test``): the checker
itself finds planted problems, and the code has none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "check_imports", Path(__file__).resolve().parents[1] / "scripts" / "check_imports.py"
)
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
ROOT = check.ROOT


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert check.cycles(graph) == [["a", "b", "c"]]
    assert check.cycles({"a": {"b"}, "b": set()}) == []


def test_a_planted_upward_import_is_reported(monkeypatch):
    graph = dict(check.GRAPH)
    graph["hierloc.geometry.lorentz"] = graph["hierloc.geometry.lorentz"] | {"hierloc.train.loop"}
    graph["hierloc.eval.evaluate"] = graph["hierloc.eval.evaluate"] | {"hierloc.locate.hierloc"}
    graph["hierloc.locate.baselines"] = graph["hierloc.locate.baselines"] | {"hierloc.train.data"}
    graph["hierloc.config"] = graph["hierloc.config"] | {"hierloc.train.runtime"}
    monkeypatch.setattr(check, "GRAPH", graph)
    bad = check.violations()
    assert "hierloc.locate.baselines imports hierloc.train.data (a higher layer)" in bad
    assert "hierloc.config imports hierloc.train.runtime (a higher layer)" in bad
    assert (
        "hierloc.eval.evaluate imports hierloc.locate.hierloc (downstream code uses "
        "load_locator and locate.types)" in bad
    )
    assert "hierloc.geometry.lorentz imports hierloc.train.loop (a higher layer)" in bad
    assert any(b.startswith("import circle:") and "hierloc.train.loop" in b for b in bad)


def test_the_code_keeps_the_house_rules():
    assert check.violations() == []


@pytest.mark.parametrize("package", sorted(check.FORBIDDEN))
def test_every_layer_exists(package):
    assert (ROOT / package).is_dir()


def test_no_loose_modules_at_the_top():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "checks.py", "errors.py"]
