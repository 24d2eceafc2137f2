"""The typer app the commands register on, and what every command shares: the one-line error
handling (:func:`handles_errors`), atomic writes, progress bars, the common options."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc import __version__
from hierloc.errors import HierlocError, InputError, missing_dependency

app = typer.Typer(
    name="hierloc",
    help="Worldwide visual geolocation: where on Earth was this photo taken?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks: speed figures measured side by side in one run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

_state = {"verbose": False}

VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show debug logs and full tracebacks.")
]


class Protocol(str, Enum):
    auto = "auto"
    osv5m = "osv5m"
    entity = "entity"
    distance = "distance"


class FileFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _fail(message: str, code: int) -> None:
    typer.echo(f"hierloc: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def handles_errors(fn):
    """Turn user errors into one line on stderr and a non-zero exit (traceback with -v)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        verbose = _state["verbose"] or kwargs.get("verbose", False)
        _configure_logging(verbose)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except HierlocError as e:
            if verbose:
                raise
            _fail(str(e), e.exit_code)
        except OSError as e:  # permissions, disk full, …: name the file
            if verbose:
                raise
            _fail(f"{e.filename or ''}: {e.strerror or e}", 2)
        except ModuleNotFoundError as e:  # an optional feature, or a damaged install
            if verbose:
                raise
            _fail(str(missing_dependency(e.name, f"hierloc {fn.__name__.replace('_', ' ')}")), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # a bug of ours: still one line unless --verbose
            if verbose:
                raise
            _fail(
                f"internal error {type(e).__name__}: {e} (rerun with --verbose for the "
                "traceback, and please report it)",
                1,
            )

    return wrapper


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + rename: never a half-written output."""
    from hierloc.data.writers import write_file_atomic

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give --output a file name, e.g. {path}/out.json")
    try:
        write_file_atomic(path, text)
    except PermissionError as e:
        raise InputError(f"{path}: cannot write here ({e.strerror or e})") from e


@contextlib.contextmanager
def row_progress(description: str, total: int | None = None):
    """A progress bar on stderr (rows and rows/s); yields ``update(rows_done)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns += [TextColumn("{task.completed:,.0f} rows")]
    columns += [TimeElapsedColumn()]
    console = Console(stderr=True)
    with Progress(
        *columns, console=console, transient=False, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int) -> None:
            bar.update(task, completed=done)

        yield update


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hierloc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: VerboseOpt = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """[bold]hierloc[/bold]: worldwide visual geolocation (HierLoc and GeoSURGE).

    Geolocate photos to country / region / subregion / city and coordinates, train on your own geotagged data, and evaluate with the field's protocols.
    """  # noqa: E501
    _state["verbose"] = verbose
