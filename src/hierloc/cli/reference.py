"""The command-line reference (``docs/cli.md``), generated from the typer app itself so it
cannot drift from the options the commands take."""

from __future__ import annotations

import inspect

import typer.core
import typer.main

from hierloc.cli import app

MARKER = "<!-- generated from the CLI by scripts/gen_cli_docs.py: edit the commands, not this -->"


def _walk(cmd, path: list[str]):
    if isinstance(cmd, typer.core.TyperGroup):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], [*path, name])
    else:
        yield path, cmd


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def commands() -> dict:
    """Every command by its full name (``hierloc data bluemarble``)."""
    root = typer.main.get_command(app)
    return {" ".join(["hierloc", *p]): c for p, c in _walk(root, [])}


def options(cmd) -> set[str]:
    """Every option spelling a command takes (``--top-k``, ``-k``, ``--no-overwrite`` …)."""
    out = set()
    for p in cmd.params:
        if isinstance(p, typer.core.TyperOption):
            out |= set(p.opts) | set(p.secondary_opts)
    return out


def cli_reference() -> str:
    """Markdown: per command its usage, help and a table of its arguments and options."""
    parts = []
    for name, cmd in commands().items():
        parts.append(f"### `{name}`\n")
        helptext = inspect.cleandoc(cmd.help or "").split("\n\n")
        parts.append(" ".join(helptext[0].split()) + "\n")
        for para in helptext[1:]:
            parts.append(" ".join(para.split()) + "\n")
        rows = []
        for p in cmd.params:
            if p.name in ("help",):
                continue
            if isinstance(p, typer.core.TyperArgument):
                spell = f"`{p.name.upper()}`" + (" …" if p.nargs == -1 else "")
                rows.append((spell, _cell(getattr(p, "help", "")), "required"))
                continue
            spell = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = "required" if p.required else ""
            if not p.required and p.default not in (None, False, (), []) and p.show_default:
                value = p.default.value if hasattr(p.default, "value") else p.default
                default = f"`{value}`"
            rows.append((spell, _cell(p.help), default))
        if rows:
            parts.append("| argument / option | meaning | default |\n|---|---|---|")
            parts.append("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows) + "\n")
    return "\n".join(parts)
