"""SphereM+ against the paper's formula evaluated by hand with ``math``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hierloc.geo.location_encoding import frequencies, sphere_m_plus


def test_matches_the_formula_term_by_term():
    lat, lon = np.array([48.8566, -33.9, 89.9]), np.array([2.3522, 151.2, -179.9])
    enc = sphere_m_plus(lat, lon, scales=4, r_min=0.01, r_max=math.pi)
    assert enc.shape == (3, 32)
    w = [1 / r for r in np.geomspace(0.01, math.pi, 4)]
    for n in range(3):
        p, lm = math.radians(lat[n]), math.radians(lon[n])
        ref = []
        for ws in w:
            ref += [
                math.sin(ws * p),
                math.cos(ws * p),
                math.sin(ws * lm),
                math.cos(ws * lm),
                math.cos(ws * p) * math.cos(lm),
                math.cos(p) * math.cos(ws * lm),
                math.cos(ws * p) * math.sin(lm),
                math.cos(p) * math.sin(ws * lm),
            ]
        assert np.allclose(enc[n], ref, atol=1e-12)
    assert np.all(np.abs(enc) <= 1)


def test_torch_equals_numpy_and_frequencies():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 20), rng.uniform(-180, 180, 20)
    ref = sphere_m_plus(lat, lon)
    got = sphere_m_plus(torch.tensor(lat), torch.tensor(lon)).numpy()
    assert ref.shape == (20, 128) and np.allclose(got, ref, atol=1e-12)
    f = frequencies(16)
    assert f[0] == pytest.approx(1000.0) and f[-1] == pytest.approx(1 / math.pi)
    with pytest.raises(ValueError):
        frequencies(4, r_min=1.0, r_max=0.5)
