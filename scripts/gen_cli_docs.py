"""Regenerate the command reference in docs/cli.md (everything after its marker line) from the
CLI itself; tests/test_docs.py fails when the file and the CLI disagree.

    python scripts/gen_cli_docs.py
"""

from __future__ import annotations

from pathlib import Path

from hierloc.cli.reference import MARKER, cli_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

head = DOC.read_text().split(MARKER)[0]
DOC.write_text(head + MARKER + "\n\n" + cli_reference())
print(f"wrote {DOC}")
