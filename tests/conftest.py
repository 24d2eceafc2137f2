from __future__ import annotations

import json
import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest -n auto): one thread each, or torch,
    # onnxruntime and numba in every worker would each start a thread per core, and the
    # oversubscribed cores make the suite many times slower. Subprocesses inherit this.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"

import pytest

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def osv5m_parity() -> dict:
    """OSV5M's official metric outputs on 2,000 seeded pairs (../shared/fixtures)."""
    path = SHARED_FIXTURES / "osv5m_parity.json"
    if not path.exists():  # a missing reference fails, it never skips
        pytest.fail(f"reference fixture {path} is missing: clone next to ../shared")
    return json.loads(path.read_text())
