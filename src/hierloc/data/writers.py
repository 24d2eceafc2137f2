"""Streaming, atomic table output: rows become visible only when the whole file is written.

A crash or an error leaves any existing output untouched (the data goes to a temp file beside
it, renamed onto the target on :meth:`AtomicTableWriter.close`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from hierloc.data.formats import folder_kind
from hierloc.data.formats import table_format as _format
from hierloc.errors import InputError


class AtomicTableWriter:
    """Write Arrow tables chunk by chunk to CSV or Parquet (format from the suffix).

    Use as a context manager; the target appears only if the block exits without error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fmt = _format(self.path)
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; give an output file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.path}: cannot create its folder ({e.strerror})") from e
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        self._writer = None
        self._schema = None
        self.rows = 0

    def write(self, table) -> None:
        if self._writer is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.tmp, self._schema)
            else:
                if self.path.name.lower().endswith(".gz"):
                    self._sink = pa.CompressedOutputStream(str(self.tmp), "gzip")
                else:
                    self._sink = str(self.tmp)
                delim = "\t" if ".tsv" in self.path.name.lower() else ","
                self._writer = pcsv.CSVWriter(
                    self._sink,
                    self._schema,
                    write_options=pcsv.WriteOptions(delimiter=delim, quoting_style="needed"),
                )
        self._writer.write_table(table.cast(self._schema))
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if self.fmt == "csv" and not isinstance(self._sink, str):
                self._sink.close()
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 (best effort on an already failing path)
                pass
        failed = RuntimeError("aborted")
        self._atomic.__exit__(RuntimeError, failed, None)  # removes the temp file

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self._writer is not None:
            self.close()
        else:
            self.abort()


class FixedRowGroupWriter:
    """Parquet output whose layout does not depend on how the rows arrived: rows are
    buffered and written in row groups of exactly ``row_group_rows`` (the last one smaller),
    so chunked and one-shot runs give byte-identical files."""

    def __init__(self, path: Path, schema, row_group_rows: int = 1 << 18) -> None:
        self.schema = schema
        self.row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(path, schema)
        self._pending: list = []
        self._n = 0

    def write(self, table) -> None:
        self._pending.append(table)
        self._n += table.num_rows
        if self._n >= self.row_group_rows:
            whole = pa.concat_tables(self._pending)
            k = (self._n // self.row_group_rows) * self.row_group_rows
            for start in range(0, k, self.row_group_rows):
                self._writer.write_table(whole.slice(start, self.row_group_rows))
            rest = whole.slice(k)
            self._pending, self._n = [rest], rest.num_rows

    def close(self) -> None:
        if self._n:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._writer.close()


def _inputs(inputs) -> list[Path]:
    return [Path(p) for p in inputs if p is not None and str(p) != ""]


def check_not_input(out: str | Path, inputs, option: str = "--output") -> None:
    """Refuse an output path that is, or holds, one of the command's inputs: writing there
    would replace what the command reads. Outputs inside an input folder are allowed (an
    evaluation report inside its model folder). The check runs before any work.
    ``inputs``: paths (files or folders; ``None`` entries are ignored)."""
    target = Path(out).resolve()
    for given in _inputs(inputs):
        inp = given.resolve()
        if target == inp:
            why = "is the input"
        elif target in inp.parents:
            why = "holds the input"
        else:
            continue
        raise InputError(
            f"{out}: {option} {why} {given}; writing there would replace what "
            f"the command reads — choose another {option} path"
        )


def check_replaceable(
    out: str | Path, overwrite: bool, kinds: tuple[str, ...] | None, option: str = "--output"
) -> None:
    """``out`` may be replaced only with ``overwrite`` and only if it is an output of the same
    kind: an empty folder or one whose manifest declares one of ``kinds`` (None: any folder;
    for the command's own internal folders)."""
    out = Path(out)
    if not out.exists():
        return
    if not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder path")
    if kinds is None or not any(out.iterdir()):
        return
    kind = folder_kind(out)
    if kind not in kinds:
        held = f"a {kind} folder" if kind else "files that are not a hierloc output"
        raise InputError(
            f"{out}: holds {held}; --overwrite only replaces a {' or '.join(kinds)} "
            f"folder — choose another {option} path"
        )


def check_folder_output(
    out: str | Path,
    overwrite: bool,
    kinds: tuple[str, ...] | None,
    inputs=(),
    option: str = "--output",
) -> None:
    """Both checks of :func:`staged_folder`, to run before any work starts."""
    check_not_input(out, inputs, option)
    check_replaceable(out, overwrite, kinds, option)


def staging_dir(out: Path, overwrite: bool, kinds: tuple[str, ...] | None, inputs=()) -> Path:
    """A fresh temp folder beside ``out`` (see :func:`staged_folder`)."""
    check_folder_output(out, overwrite, kinds, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _fsync_tree(root: Path) -> None:
    """Every file under ``root``, then every folder, flushed to disk."""
    folders = [root]
    for p in root.rglob("*"):
        if p.is_dir():
            folders.append(p)
        elif p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in folders:
        _fsync_dir(d)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system has no such call."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL (file system without it), EOPNOTSUPP
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_dir(tmp: Path, out: Path) -> None:
    """Put the finished temp folder in place of ``out``, flushed to disk first. A crash at any
    point leaves ``out`` as the old folder or the new one, never neither: a new ``out`` is one
    rename; an existing one is exchanged with ``tmp`` in one atomic step (then the old one,
    now at ``tmp``, is removed). Without an atomic exchange (not Linux), the old folder is
    renamed aside first and a crash between the two renames leaves it at ``.NAME.old``."""
    _fsync_tree(tmp)
    if not out.exists():
        tmp.rename(out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


@contextlib.contextmanager
def staged_folder(
    out: Path, overwrite: bool, kinds: tuple[str, ...] | None, inputs=()
) -> Iterator[Path]:
    """Write a whole output folder atomically: yields a temp folder beside ``out``, swapped in
    place of ``out`` when the block succeeds and removed when it fails.

    ``out`` must not exist unless ``overwrite``, and then only as an output of the same kind
    (its manifest's ``format`` in ``kinds``; ``None``: any folder, for internal folders such
    as checkpoints); it must not be, hold or lie inside any of ``inputs``."""
    tmp = staging_dir(out, overwrite, kinds, inputs)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)


def check_output_file(
    out: str | Path | None,
    inputs=(),
    suffixes: tuple[str, ...] | None = None,
    option: str = "--output",
) -> None:
    """Check an output file before any work: not a folder, not one of the inputs, and with
    one of ``suffixes`` when given."""
    if out is None:
        return
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give {option} a file name, e.g. {out}/out.json")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise InputError(f"{out}: {option} must end in {' or '.join(suffixes)}")
    check_not_input(out, inputs, option)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The one atomic file writer: yields a temp path beside ``path``; when the block exits
    without error the file there is fsynced and renamed onto ``path`` (never half-written),
    otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file_atomic(path: str | Path, data: bytes | str) -> None:
    """``data`` (text or bytes) written to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
