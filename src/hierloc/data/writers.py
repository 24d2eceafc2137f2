"""Streaming, atomic table output: rows become visible only when the whole file is written.

A crash or an error leaves any existing output untouched (the data goes to a temp file beside
it, renamed onto the target on :meth:`AtomicTableWriter.close`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from hierloc.data.tables import _format
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
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer = None
        self._schema = None
        self.rows = 0

    def write(self, table) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if self._writer is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.tmp, self._schema)
            else:
                if self.path.name.lower().endswith(".gz"):
                    import pyarrow as pa

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
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 (best effort on an already failing path)
                pass
        self.tmp.unlink(missing_ok=True)

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
        import pyarrow.parquet as pq

        self.schema = schema
        self.row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(path, schema)
        self._pending: list = []
        self._n = 0

    def write(self, table) -> None:
        import pyarrow as pa

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
        import pyarrow as pa

        if self._n:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._writer.close()


def staging_dir(out: Path, overwrite: bool) -> Path:
    """A fresh temp folder beside ``out`` (``out`` must not exist unless ``overwrite``)."""
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit_dir(tmp: Path, out: Path) -> None:
    """Swap the finished temp folder in place of ``out``."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Write a whole output folder atomically: yields a temp folder beside ``out``, swapped in
    place of ``out`` when the block succeeds and removed when it fails."""
    tmp = staging_dir(out, overwrite)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)


def write_file_atomic(path: str | Path, data: bytes | str) -> None:
    """Write a file through a temp file beside it, fsync and rename: never half-written."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
