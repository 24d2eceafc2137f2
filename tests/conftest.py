from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def osv5m_parity() -> dict:
    """OSV5M's official metric outputs on 2,000 seeded pairs (../shared/fixtures)."""
    path = SHARED_FIXTURES / "osv5m_parity.json"
    if not path.exists():  # a missing reference fails, it never skips
        pytest.fail(f"reference fixture {path} is missing: clone next to ../shared")
    return json.loads(path.read_text())
