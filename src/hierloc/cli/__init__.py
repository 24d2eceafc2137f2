"""The ``hierloc`` command line: each command is a thin wrapper over one library call.

Errors a user can cause print one line (``hierloc: error: …``) and exit with status 2; add
``--verbose`` to see the traceback. Commands by concern: ``score`` (scoring, geocoding),
``ingest`` (data sets, hierarchies, cells), ``features`` (extract, semantic maps), ``train``,
``predict`` (index, predict, evaluate), ``workflows`` (compare, demo, ablate), ``serve``,
``bench``. Commands import the
library inside their bodies, so ``hierloc --help`` starts without loading torch.
"""

from __future__ import annotations

import typer

# the commands register themselves on ``app`` when imported
from hierloc.cli import bench as _bench  # noqa: F401
from hierloc.cli import features as _features  # noqa: F401
from hierloc.cli import ingest as _ingest  # noqa: F401
from hierloc.cli import predict as _predict  # noqa: F401
from hierloc.cli import score as _score  # noqa: F401
from hierloc.cli import serve as _serve  # noqa: F401
from hierloc.cli import train as _train  # noqa: F401
from hierloc.cli import workflows as _workflows  # noqa: F401
from hierloc.cli.app import app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. A usage error (unknown option, a value out of range, a
    missing argument) is one line like every other error, exit status 2."""
    usage_error = type(typer.BadParameter("")).__mro__[1]  # click's UsageError (vendored)
    try:
        code = app(args=argv, prog_name="hierloc", standalone_mode=False)
    except usage_error as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # bare ``hierloc`` or ``hierloc bench``
            typer.echo(ctx.get_help() if ctx is not None else e.format_message())
            raise SystemExit(2) from None
        where = ctx.command_path if ctx is not None else "hierloc"
        message = " ".join(e.format_message().split())
        typer.echo(f"hierloc: error: {message} (see {where} --help)", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.echo("hierloc: error: interrupted", err=True)
        raise SystemExit(130) from None
    else:
        if isinstance(code, int) and code:
            raise SystemExit(code)


__all__ = ["app", "main"]
