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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small HierLoc run and its model folder on pseudo photos (``tests.test_predict``);
    shared by every test of a worker: tests copy it before they change anything."""
    from tests.test_predict import _train_and_index

    return _train_and_index(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """The toy GeoSURGE inputs (``tests.test_geosurge.build_toy``)."""
    from tests.test_geosurge import build_toy

    return build_toy(tmp_path_factory.mktemp("geosurge"))
