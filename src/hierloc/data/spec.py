"""Folder specs: what a folder of a given kind holds — its manifest's keys, every file with its
dtype and shape as functions of the manifest, the weights the config builds — checked before
anything loads (:func:`check_folder`).

A family describes its folder once (:class:`Spec`); :func:`check_folder` then reports the first
problem in one line naming the file and the fix (an :class:`~hierloc.errors.InputError`): a
missing or truncated file, a wrong dtype or shape, an index out of range, a manifest key that
is absent or of the wrong type, tensors whose names or shapes differ from what the config and
manifest build. Headers are read without loading: ``.npy`` headers, Parquet footers and the
safetensors JSON header; only arrays of row indices (small) are read whole.

Shapes are tuples of ``int`` (fixed), ``str`` (a named dimension: the first file that has it
binds it, every later one must agree; the manifest may bind some up front) or ``None`` (any).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierloc.errors import InputError

Dim = int | str | None


@dataclass(frozen=True)
class Array:
    """A ``.npy`` file: its dtype (one of ``dtypes``) and ``shape``; with ``index_of``, its
    values are rows of a dimension (``0 ≤ v < dims[index_of]``)."""

    name: str
    what: str
    dtypes: tuple[str, ...]
    shape: tuple[Dim, ...]
    index_of: str | None = None


@dataclass(frozen=True)
class Table:
    """A Parquet file with at least ``columns``; ``rows`` names its row count's dimension."""

    name: str
    what: str
    columns: tuple[str, ...]
    rows: str | None = None


@dataclass(frozen=True)
class Weights:
    """A safetensors file whose tensor names and shapes must equal ``expected(context)`` (the
    module the folder's config and manifest build: see :func:`module_shapes`)."""

    name: str
    what: str
    expected: Callable[[dict], dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Document:
    """A file read whole by ``load(path)`` (a YAML config, a JSON side file), which raises
    :class:`InputError` when it is wrong; what it returns goes into the context as ``key``."""

    name: str
    what: str
    load: Callable[[Path], Any]
    key: str


Entry = Array | Table | Weights | Document


@dataclass(frozen=True)
class Spec:
    """A folder kind: the manifest keys it needs (``key → type or tuple of types``, checked
    first), then its files and the dimensions the manifest fixes (both functions of the
    manifest), and checks across files (``check(path, context)``, raising
    :class:`InputError`) that run once every file passed."""

    what: str  # "HierLoc model folder"
    fix: str  # how to get a good folder
    manifest: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    files: Callable[[dict], Sequence[Entry]] = lambda manifest: ()  # of the (checked) manifest
    dims: Callable[[dict], dict[str, int]] = lambda manifest: {}
    checks: Sequence[Callable[[Path, dict], None]] = ()


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, offset of the data)`` from a ``.npy`` file's header alone."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else (
            np.lib.format.read_array_header_2_0
        )  # fmt: skip
        shape, _, dtype = read(f)
        return tuple(shape), dtype, f.tell()


def safetensors_header(path: Path) -> dict[str, dict]:
    """The safetensors JSON header (tensor name → dtype, shape, data offsets), checked against
    the file's length."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ValueError(f"header of {n:,} bytes in a file of {size:,}")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + n + end > size:
        raise ValueError(
            f"truncated: the tensors need {8 + n + end:,} bytes, the file has {size:,}"
        )
    return header


def module_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer names → shapes of the module ``build()`` makes, built on PyTorch's
    meta device (no memory, no initialisation)."""
    import torch

    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + ("…" if len(names) > 3 else "")


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class _Checker:
    def __init__(self, path: Path, spec: Spec, manifest: dict) -> None:
        self.path, self.spec, self.manifest = path, spec, manifest
        self.dims: dict[str, int] = {}
        self.bound_by: dict[str, str] = {}
        self.context: dict[str, Any] = {"manifest": manifest, "dims": self.dims, "path": path}

    def fail(self, name: str, message: str) -> None:
        raise InputError(f"{self.path / name}: {message}; {self.spec.fix}")

    def run(self) -> dict:
        for key, kind in self.spec.manifest.items():
            if key not in self.manifest:
                self.fail("manifest.json", f"no {key!r} key (a {self.spec.what} needs it)")
            value = self.manifest[key]
            bad_bool = isinstance(value, bool) and kind in (int, float)
            if bad_bool or not isinstance(value, kind):
                want = (
                    kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
                )
                self.fail("manifest.json", f"{key!r} is {value!r}, not a {want}")
        try:
            fixed = self.spec.dims(self.manifest)
            files = self.spec.files(self.manifest)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            self.fail("manifest.json", f"inconsistent ({type(e).__name__}: {e})")
        self.dims.update(fixed)
        self.bound_by.update({k: "manifest.json" for k in fixed})
        for entry in files:
            file = self.path / entry.name
            if not file.is_file():
                self.fail(entry.name, f"missing (the {entry.what})")
            try:
                self._entry(entry, file)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 (each reader has its own error for damage)
                first = (str(e).splitlines() or [""])[0][:200]
                self.fail(
                    entry.name, f"damaged or not a {entry.what} ({type(e).__name__}: {first})"
                )
        for check in self.spec.checks:
            check(self.path, self.context)
        return self.context

    def _bind(self, name: str, shape: tuple[int, ...], want: tuple[Dim, ...], what: str) -> None:
        if len(shape) != len(want):
            self.fail(
                name, f"{what} of shape {_shape_text(shape)}, expected {len(want)} dimensions"
            )
        for got, dim in zip(shape, want, strict=True):
            if dim is None:
                continue
            if isinstance(dim, int):
                if got != dim:
                    self.fail(
                        name, f"{what} of shape {_shape_text(shape)}, expected {_shape_text(want)}"
                    )
                continue
            if dim in self.dims and self.dims[dim] != got:
                self.fail(
                    name,
                    f"{what} of shape {_shape_text(shape)}: its {dim} is {got} but "
                    f"{self.bound_by[dim]} says {self.dims[dim]}",
                )
            if dim not in self.dims:
                self.dims[dim], self.bound_by[dim] = int(got), name

    def _entry(self, entry: Entry, file: Path) -> None:
        if isinstance(entry, Array):
            shape, dtype, offset = npy_header(file)
            if dtype.name not in entry.dtypes:
                self.fail(
                    entry.name,
                    f"{entry.what} of dtype {dtype.name}, expected {' or '.join(entry.dtypes)}",
                )
            need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if file.stat().st_size < need:
                self.fail(entry.name, f"truncated: {file.stat().st_size:,} bytes of {need:,}")
            self._bind(entry.name, shape, entry.shape, entry.what)
            if entry.index_of is not None:
                n = self.dims.get(entry.index_of)
                values = np.load(file, mmap_mode="r")
                if values.size and n is not None and (values.min() < 0 or values.max() >= n):
                    self.fail(
                        entry.name,
                        f"{entry.what} holds rows from {values.min()} to {values.max()}, but "
                        f"there are {n} ({entry.index_of}, from {self.bound_by[entry.index_of]})",
                    )
        elif isinstance(entry, Table):
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(file)
            missing = [c for c in entry.columns if c not in meta.schema_arrow.names]
            if missing:
                self.fail(entry.name, f"{entry.what} without the columns {missing}")
            if entry.rows is not None:
                self._bind(
                    entry.name, (meta.metadata.num_rows,), (entry.rows,), f"{entry.what} rows"
                )
        elif isinstance(entry, Document):
            self.context[entry.key] = entry.load(file)
        else:
            header = safetensors_header(file)
            want = entry.expected(self.context)
            got = {k: tuple(v["shape"]) for k, v in header.items()}
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            if missing or extra:
                parts = []
                if missing:
                    parts.append(
                        f"lacks {len(missing)} tensors the config builds ({_few(missing)})"
                    )
                if extra:
                    parts.append(f"has {len(extra)} it does not ({_few(extra)})")
                self.fail(
                    entry.name,
                    f"{entry.what} {' and '.join(parts)}: weights and config are from "
                    "different models",
                )
            for key in sorted(want):
                if got[key] != want[key]:
                    self.fail(
                        entry.name,
                        f"tensor {key!r} has shape {_shape_text(got[key])} but the folder's "
                        f"config and manifest build {_shape_text(want[key])}: weights and config "
                        "are from different models",
                    )


def check_folder(path: str | Path, spec: Spec, manifest: dict) -> dict:
    """Check folder ``path`` against ``spec`` (its ``manifest`` already read); returns the
    context (``path``, ``manifest``, the bound ``dims`` and every :class:`Document`'s value,
    what the :class:`Weights`' and the checks' functions receive). Raises
    :class:`InputError` naming the first bad file and the fix."""
    return _Checker(Path(path), spec, manifest).run()
