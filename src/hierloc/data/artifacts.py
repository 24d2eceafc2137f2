"""One guarded reader per artefact type: a missing or damaged file is an :class:`InputError`
naming the file, what is wrong and how to rebuild it — never an internal error.

``fix`` is the sentence that says how to get a good file (``"rebuild it with hierloc index"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from hierloc.errors import InputError


def _guarded(path: str | Path, what: str, fix: str, read: Callable):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing (expected the {what}); {fix}")
    try:
        return read(path)
    except InputError:
        raise
    except Exception as e:  # each library has its own error type for a damaged file
        first = (str(e).splitlines() or [""])[0][:200]
        raise InputError(
            f"{path}: damaged or not a {what} ({type(e).__name__}: {first}); {fix}"
        ) from e


def read_json(path: str | Path, what: str, fix: str) -> dict:
    def read(p: Path) -> dict:
        data = json.loads(p.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return data

    return _guarded(path, what, fix, read)


def read_npy(path: str | Path, what: str, fix: str, mmap: bool = False):
    return _guarded(path, what, fix, lambda p: np.load(p, mmap_mode="r" if mmap else None))


def read_parquet(path: str | Path, what: str, fix: str, **kwargs):
    return _guarded(path, what, fix, lambda p: pd.read_parquet(p, **kwargs))


def read_safetensors(path: str | Path, what: str, fix: str) -> dict:
    return _guarded(path, what, fix, lambda p: load_file(str(p)))
