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
