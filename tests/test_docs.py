"""The README and docs/ against the software: every relative link resolves, every ``hierloc``
command and ``--option`` they name exists, the command reference is the CLI's own, and the
README stays a user's README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hierloc.cli.reference import MARKER, cli_reference, commands, options

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = commands()
GLOBAL = {"--help", "-h", "--version", "--verbose", "-v"}


def _code(text: str) -> list[str]:
    """Code block lines and inline code spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = [ln for b in blocks for ln in b.splitlines()]
    outside = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    return lines + re.findall(r"`([^`\n]+)`", outside)


def _mentions(snippet: str):
    """(command, options) for each ``hierloc …`` invocation in a snippet; the invocation ends
    at a pipe, ``&&``, ``;``, a comment or the next ``hierloc``."""
    snippet = re.split(r"(?:^|\s)#", snippet)[0]  # a shell comment is prose
    for part in re.split(r"\||&&|;|\s(?=hierloc\s)", snippet):
        m = re.search(r"(?:^|\s|/)hierloc\s+([a-z][a-z-]*(?:\s+[a-z][a-z-]*)?)", part)
        if not m:
            continue
        words = m.group(1).split()
        name = None
        for n in (2, 1):
            if " ".join(["hierloc", *words[:n]]) in COMMANDS:
                name = " ".join(["hierloc", *words[:n]])
                break
        groups = {c.split()[1] for c in COMMANDS if len(c.split()) > 2}
        if name is None and words[0] in groups and len(words) == 1:
            continue  # a group named on its own (``hierloc bench``)
        opts = re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", part[m.end(1) :])
        yield name or " ".join(["hierloc", *words]), opts


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc):
    text = doc.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_commands_and_options_exist(doc):
    wrong = []
    for snippet in _code(doc.read_text()):
        for name, opts in _mentions(snippet):
            if name not in COMMANDS:
                if not re.search(r"[A-Z]", name):
                    wrong.append(f"{name!r} is not a command")
                continue
            known = options(COMMANDS[name]) | GLOBAL
            wrong += [f"{name} has no {o}" for o in opts if o.startswith("--") and o not in known]
    assert not wrong, f"{doc.name}: " + "; ".join(sorted(set(wrong)))


def test_the_check_catches_an_unknown_command_and_option():
    found = dict(_mentions("hierloc train --hierarchy H --nope 1 | hierloc frobnicate -x"))
    assert found["hierloc train"] == ["--hierarchy", "--nope"]
    assert "hierloc frobnicate" in found
    assert "--nope" not in options(COMMANDS["hierloc train"])


def test_the_command_reference_is_the_clis_own():
    text = (ROOT / "docs" / "cli.md").read_text()
    assert MARKER in text, "docs/cli.md lost its marker: python scripts/gen_cli_docs.py"
    generated = text.split(MARKER, 1)[1].strip()
    assert generated == cli_reference().strip(), "run python scripts/gen_cli_docs.py"


def test_readme_is_short_and_docs_speak_of_the_software_not_its_history():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    for doc in DOCS:
        text = doc.read_text()
        for pattern in (r"\bissue \d+", r"\bthis session\b", r"\bsessions? (?:earlier|later)\b"):
            hits = re.findall(pattern, text, flags=re.I)
            assert not hits, f"{doc.name} narrates history: {hits[:3]}"
