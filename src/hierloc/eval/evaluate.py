"""``hierloc evaluate``: a model folder on a labelled split, with the field's protocols.

Writes into the output folder:

* ``predictions.parquet`` — per image the top answer (``id, latitude, longitude``, entity ids
  and names per level, ``score, confidence``) with the truth coordinates and ``error_km``: the
  same file ``hierloc score`` accepts;
* ``metrics.json`` — ``entity`` and ``osv5m`` protocol results (the keys of ``hierloc score
  --format json``: GeoScore, mean/median km, accuracy within 1 / 25 / 200 / 750 / 2,500 km, per
  level accuracy), counts, rejected rows;
* ``error_cdf.png`` (share of images within x km), ``error_map.png`` (mean error per country,
  paper Fig. 5: a disc per country at its images' mean location, coloured by mean error),
  ``report.md`` (the table and both pictures);
* ``rejects.csv`` — images of the split that could not be scored, with the reason.

Protocols: ``entity`` compares the predicted entity ids with the ids of the image's labels (the
hierarchy's own ids); ``osv5m`` is OSV5M's rule (the predicted coordinates' nearest GeoNames
place vs the truth label). When the split has OSV5M's ``unique_*`` columns they are the truth;
otherwise the truth labels are derived the way OSV5M made theirs, by the same reverse geocoding
of the true coordinates (documented in ``metrics.json`` as ``osv5m_truth``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hierloc.data.images import Item
from hierloc.data.writers import atomic_path
from hierloc.data.writers import write_file_atomic as write_atomic
from hierloc.errors import InputError
from hierloc.eval.metrics import level_calibration
from hierloc.eval.plots import error_cdf_plot, error_map_plot, reliability_plot
from hierloc.eval.score import score_frames
from hierloc.geo.geonames import default_gazetteer
from hierloc.geo.haversine import haversine_km
from hierloc.hierarchy.build import LEVEL_NAMES as LEVELS
from hierloc.hierarchy.labels import metadata_entities
from hierloc.locate import load_locator
from hierloc.locate.types import Prediction

OSV5M = {
    "country": "unique_country",
    "region": "unique_region",
    "subregion": "unique_sub-region",
    "city": "unique_city",
}


def default_split(data: str | Path, split: str | None) -> str | None:
    """The split evaluated: ``split`` when given; else ``test`` for a data folder, and None
    (every row) for a metadata file."""
    return split if split is not None or Path(data).is_file() else "test"


def split_file(data: str | Path, split: str | None) -> Path:
    """``DATA/{split}.parquet`` (or .csv; ``test`` when None) for a data folder, or ``data``
    itself for a file (its rows are chosen by :func:`split_rows`)."""
    data = Path(data)
    if data.is_file():
        return data
    split = default_split(data, split)
    for ext in (".parquet", ".csv"):
        if (data / f"{split}{ext}").exists():
            return data / f"{split}{ext}"
    raise InputError(
        f"{data}: no {split}.parquet or {split}.csv; give the data folder of "
        "hierloc data bluemarble or a metadata file"
    )


def names_images(path: Path) -> bool:
    """Whether a metadata file has a ``path`` column (its images can be read)."""
    if path.suffix in (".parquet", ".pq"):
        return "path" in pq.read_schema(path).names  # the schema only, not the rows
    return "path" in pd.read_csv(path, nrows=0).columns


def split_rows(raw: pd.DataFrame, path: Path, split: str | None) -> set[str] | None:
    """The ids of a metadata file's rows to score: those whose ``split`` column equals
    ``split``; every row when the file has no ``split`` column and none was asked for (None).
    A file with a ``split`` column needs ``split``, and ``split`` needs the column: never a
    silent choice."""
    if "split" not in raw.columns:
        if split is not None:
            raise InputError(
                f"--split {split}: {path} has no 'split' column, so its rows cannot be chosen by "
                "split; leave --split out to score every row, or give the data folder"
            )
        return None
    values = sorted(str(v) for v in raw["split"].dropna().unique())
    if split is None:
        raise InputError(
            f"{path} has a 'split' column ({', '.join(values)}): choose the rows to score with "
            "--split"
        )
    chosen = raw.loc[raw["split"].astype(str) == split, "id"].astype(str)
    if chosen.empty:
        raise InputError(
            f"--split {split}: no row of {path} has split {split!r} (its split column holds: "
            f"{', '.join(values) or 'nothing'})"
        )
    return set(chosen)


def osv5m_truth(frame: pd.DataFrame, raw: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """OSV5M ``unique_*`` truth labels: the file's own, else by reverse geocoding the truth."""
    if raw is not None and any(c in raw for c in OSV5M.values()):
        cols = [c for c in OSV5M.values() if c in raw]
        merged = frame[["id"]].merge(raw[["id", *cols]].astype({"id": str}), on="id", how="left")
        return merged[cols], "file"
    gaz = default_gazetteer()
    near = gaz.nearest(frame["latitude"].to_numpy(), frame["longitude"].to_numpy())
    return pd.DataFrame({c: gaz.level_keys(lv)[near] for lv, c in OSV5M.items()}), "geonames"


def _encode_missing(predictor, path: Path, raw: pd.DataFrame, ids, feats, ok):
    """Images of the split that the store lacks, read from the file's ``path`` column with the
    model's own encoder (as ``hierloc predict`` reads photos): ``(features, found, rejects)``
    for every id, in order; unreadable images are rejected with their reason."""
    want = raw[raw["id"].astype(str).isin(set(ids[~ok]))][["id", "path"]].astype(str)
    items = [
        Item(i, p if Path(p).is_absolute() else str(path.parent / p), None, "file")
        for i, p in zip(want["id"], want["path"], strict=True)
    ]
    got_ids, got, unread = predictor.encode_items(items)
    pos = {i: k for k, i in enumerate(got_ids)}
    extra = np.array([(not f) and (i in pos) for i, f in zip(ids, ok, strict=True)])
    full = np.zeros((len(ids), predictor.image_dim), np.float32)
    full[ok] = feats
    if extra.any():
        full[extra] = got[[pos[i] for i in ids[extra]]]
    found = ok | extra
    why = {r.id: f"unreadable image: {r.reason}" for r in unread}
    lost = ids[~found]
    missing = pd.DataFrame(
        {"id": lost, "reason": [why.get(i, "no features and no path") for i in lost]}
    )
    return full[found], found, missing


def predictions_frame(predictions: list[Prediction]) -> pd.DataFrame:
    """The top answer of each prediction as one row (``hierloc score``'s input)."""
    rows = []
    for p in predictions:
        row = {"id": p.id}
        if p.answers:
            a = p.best
            row |= {
                "latitude": a.latitude,
                "longitude": a.longitude,
                "score": a.score,
                "confidence": a.confidence,
            }
            for place in a.places:
                row[f"{place.level}_id"] = place.entity_id
                row[place.level] = place.name
                row[f"{place.level}_confidence"] = a.level_confidence.get(place.level)
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate(
    model: str | Path,
    data: str | Path,
    output: str | Path,
    split: str | None = "test",
    features: str | Path | None = None,
    beam: int = 10,
    search: str = "beam",
    semantic: str | Path | None = None,
    ten_crop: bool = False,
) -> dict:
    """Predict every image of the split, score with both protocols, write the report.
    ``ten_crop`` (GeoSURGE): each image read from the split's ``path`` column and its
    prediction averaged over the standard ten crops, as the paper evaluates.
    ``split`` names a data folder's file (``test`` when None), or a metadata file's rows by
    its ``split`` column (every row when None and the file has no such column)."""
    path = split_file(data, split)
    bad: list = []
    truth = metadata_entities(path, rejected=bad)  # reads and checks the whole file
    truth["id"] = truth["id"].astype(str)
    raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    chosen = split_rows(raw, path, split) if Path(data).is_file() else None
    split = default_split(data, split)
    predictor = load_locator(model)
    if chosen is not None:
        truth = truth[truth["id"].isin(chosen)].reset_index(drop=True)
        bad = [b for b in bad if str(b[1]) in chosen]
        raw = raw[raw["id"].astype(str).isin(chosen)]
    if truth.empty:
        raise InputError(f"{path}: no labelled records to evaluate")
    if ten_crop:
        return _finish(
            *_ten_crop_predictions(predictor, path, truth, bad), model, path, split, beam,
            search, raw, output, ten_crop=True,
        )  # fmt: skip
    store = features or predictor.manifest.get("features")
    ids = truth["id"].to_numpy(dtype=object)
    feats, ok = predictor.inputs_for(ids, features, semantic)
    missing = pd.DataFrame({"id": ids[~ok], "reason": f"no features (or semantic map) in {store}"})
    if (~ok).any() and "path" in raw.columns and getattr(predictor, "batches_photos", False):
        feats, ok, missing = _encode_missing(predictor, path, raw, ids, feats, ok)
    if not ok.any():
        enc = predictor.encoder_name or "the model's encoder"
        raise InputError(
            f"{path}: none of its {len(ids)} images are in {store}; pass --features with a "
            f"store of them (hierloc extract … --encoder {enc}), or give the file a 'path' "
            "column so that the model's own encoder reads the images"
        )
    rejects = pd.concat(
        [pd.DataFrame(bad, columns=["row", "id", "reason"]).drop(columns="row"), missing],
        ignore_index=True,
    )
    truth = truth[ok].reset_index(drop=True)
    preds = predictions_frame(
        predictor.predict_features(
            feats, ids=truth["id"].tolist(), top_k=1, beam=beam, search=search
        )
    )
    return _finish(preds, truth, rejects, model, path, split, beam, search, raw, output)


def _ten_crop_predictions(predictor, path: Path, truth: pd.DataFrame, bad: list):
    """``(predictions, truth, rejects)`` of the split's images, each averaged over ten crops."""
    if not predictor.supports_ten_crop:
        raise InputError(
            f"--ten-crop averages GeoSURGE's predictions over ten crops of each image; "
            f"{predictor.family} models answer from stored features (leave --ten-crop out)"
        )
    preds, rejected = predictor.predict_images([path], top_k=1, ten_crop=True)
    frame = predictions_frame(preds)
    wanted = set(truth["id"])
    frame = frame[frame["id"].astype(str).isin(wanted)]
    order = {i: k for k, i in enumerate(frame["id"].astype(str))}
    truth = truth[truth["id"].isin(order)].copy()
    truth = truth.iloc[np.argsort([order[i] for i in truth["id"]])].reset_index(drop=True)
    frame = frame.reset_index(drop=True)
    if truth.empty:
        raise InputError(f"{path}: none of its images could be read for ten-crop evaluation")
    rejects = pd.concat(
        [
            pd.DataFrame(bad, columns=["row", "id", "reason"]).drop(columns="row"),
            pd.DataFrame(
                [(r.id, r.reason) for r in rejected if r.id in wanted], columns=["id", "reason"]
            ),
        ],
        ignore_index=True,
    )
    return frame, truth, rejects


def _finish(
    preds, truth, rejects, model, path, split, beam, search, raw, output, ten_crop=False
) -> dict:
    """Score ``preds`` against ``truth`` with both protocols; write the outputs."""
    osv, origin = osv5m_truth(truth, raw)
    results = {}
    for protocol, extra in (("entity", truth[[f"{lv}_id" for lv in LEVELS]]), ("osv5m", osv)):
        t = pd.concat([truth[["id", "latitude", "longitude"]], extra], axis=1)
        results[protocol] = score_frames(preds, t, protocol=protocol).to_dict()
    preds["true_latitude"] = truth["latitude"].to_numpy()
    preds["true_longitude"] = truth["longitude"].to_numpy()
    preds["error_km"] = haversine_km(
        preds["latitude"].to_numpy(),
        preds["longitude"].to_numpy(),
        preds["true_latitude"].to_numpy(),
        preds["true_longitude"].to_numpy(),
    )
    preds["true_country_id"] = truth["country_id"].to_numpy()
    calibration = level_calibration(preds, truth)
    metrics = {
        "model": str(model),
        "data": str(path),
        "split": split,
        "n": len(preds),
        "search": search,
        "beam": beam,
        "ten_crop": ten_crop,
        "rejected": len(rejects),
        "rejected_by_reason": {str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
        "without_country": truth.attrs.get("without_country", 0),
        "osv5m_truth": origin,
        **results,
        "calibration": {
            lv: {k: v for k, v in c.items() if k != "bins"} for lv, c in calibration.items()
        },
    }
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _write_outputs(out, preds, metrics, rejects, calibration)
    return metrics


def _write_outputs(
    out: Path, preds: pd.DataFrame, metrics: dict, rejects: pd.DataFrame, calibration: dict
) -> None:
    with atomic_path(out / "predictions.parquet") as tmp:
        preds.to_parquet(tmp, index=False)
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if len(rejects):
        write_atomic(out / "rejects.csv", rejects.to_csv(index=False))
    error_cdf_plot({"model": preds["error_km"].to_numpy()}, out / "error_cdf.png")
    error_map_plot(preds, out / "error_map.png")
    if calibration:
        reliability_plot(calibration, out / "reliability.png")
    write_atomic(out / "report.md", report_markdown({"model": metrics}, pictures=True))


def metrics_table(rows: dict[str, dict], protocol: str = "entity") -> str:
    """A markdown table, one row per model: GeoScore, km, level accuracies, recall at km."""
    head = (
        "| model | GeoScore | mean km | median km | country | region | subregion | city | "
        "1 km | 25 km | 200 km | 750 km | 2500 km |"
    )
    lines = [head, "|" + "---|" * 13]

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}"

    for name, m in rows.items():
        r = m[protocol] if protocol in m else m
        cells = [name, f"{r['geoscore']:.0f}", f"{r['mean_km']:,.0f}", f"{r['median_km']:,.0f}"]
        cells += [pct(r[f"acc_{lv}"]) for lv in LEVELS]
        cells += [pct(r[f"acc_{k}km"]) for k in (1, 25, 200, 750, 2500)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(rows: dict[str, dict], pictures: bool = False) -> str:
    first = next(iter(rows.values()))
    text = [
        f"# hierloc evaluation\n\nData: `{first['data']}` (split `{first['split']}`, "
        f"{first['n']:,} images scored, {first['rejected']} rejected).\n"
    ]
    text.append(
        "\n## Entity protocol (the hierarchy's entity ids)\n\n" + metrics_table(rows, "entity")
    )
    text.append(
        f"\n## OSV5M protocol (nearest GeoNames place; truth labels: "
        f"{first['osv5m_truth']})\n\n" + metrics_table(rows, "osv5m")
    )
    text.append("\nAccuracies and recall in %. GeoScore = mean of 5000·exp(−km/1492.7).\n")
    cal = first.get("calibration") or {}
    if cal:
        cells = ", ".join(
            f"{lv} {c['ece']:.3f} (right {100 * c['accuracy']:.1f} %, mean confidence "
            f"{100 * c['mean_confidence']:.1f} %)"
            for lv, c in cal.items()
        )
        text.append(f"\nCalibration of the top answer's confidence, ECE over 10 bins: {cells}.\n")
    if pictures:
        text.append("\n![error CDF](error_cdf.png)\n\n![mean error per country](error_map.png)\n")
        if cal:
            text.append("\n![reliability per level](reliability.png)\n")
    return "".join(text)
