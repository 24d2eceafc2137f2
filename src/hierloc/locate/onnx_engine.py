"""The exported geolocator (``hierloc export``) as a prediction engine: onnxruntime, PIL and
NumPy only — no torch, numba or pandas on its path, so one photo is answered in well under a
second from a cold start.

:class:`OnnxGeolocator` reads the file's metadata (entities, levels, preprocessing, width),
decodes and preprocesses photos exactly as the Python engine does
(:mod:`hierloc.data.decode`, :mod:`hierloc.data.preprocess`) and returns the same
:class:`~hierloc.locate.types.Prediction` objects, so ``hierloc predict --engine onnx`` writes
the same documents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hierloc.data.decode import decode
from hierloc.data.preprocess import Preprocess
from hierloc.errors import InputError
from hierloc.locate.types import Answer, Place, Prediction, Rejected

FORMAT = "hierloc-onnx"
VERSION = 1


def read_metadata(path: str | Path, session=None) -> dict:
    """The ``hierloc`` metadata of an exported file (checked: format and version)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; write one with hierloc export MODEL_DIR -o FILE")
    if session is None:
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 (onnxruntime's own error types)
            first = (str(e).splitlines() or [""])[0][:200]
            raise InputError(f"{path}: not a readable ONNX file ({first})") from e
    raw = session.get_modelmeta().custom_metadata_map.get("hierloc")
    if raw is None:
        raise InputError(f"{path}: an ONNX file without hierloc's metadata; use hierloc export")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(
            f"{path}: {meta.get('format')} version {meta.get('version')}, this hierloc reads "
            f"{FORMAT} version {VERSION}; export the model again"
        )
    return meta


class OnnxGeolocator:
    """An exported HierLoc file, answering like :class:`~hierloc.locate.hierloc.Geolocator`."""

    family = "hierloc-onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 (onnxruntime's own error types)
            first = (str(e).splitlines() or [""])[0][:200]
            raise InputError(f"{path}: not a readable ONNX file ({first})") from e
        self.meta = read_metadata(path, self.session)
        self.input = self.meta["input"]
        pre = self.meta.get("preprocess")
        self.preprocess = None
        if pre is not None:
            pre = pre | {"mean": tuple(pre["mean"]), "std": tuple(pre["std"])}
            self.preprocess = Preprocess(**pre)
        self.width = int(self.meta["width"])
        self.levels = self.meta["levels"]

    def predict_arrays(self, x: np.ndarray, ids: list[str], top_k: int = 5) -> list[Prediction]:
        """Pixels ``(B, 3, S, S)`` or features ``(B, D)`` (the file's input) → predictions."""
        if not 1 <= top_k <= self.width:
            raise InputError(
                f"--top-k {top_k}: this file keeps {self.width} paths (1–{self.width})"
            )
        if not len(ids):
            return []
        paths, scores, coords, conf = self.session.run(
            None, {self.input: np.ascontiguousarray(x, dtype=np.float32)}
        )
        out = []
        for b, ident in enumerate(ids):
            answers = []
            for j in range(min(top_k, paths.shape[1])):
                path = paths[b, j]
                if path.min() < 0:
                    break
                places = []
                for lv, row in enumerate(path.tolist()):
                    t = self.levels[lv]
                    places.append(
                        Place(
                            t["level"],
                            t["ids"][row],
                            t["names"][row],
                            t["latitude"][row],
                            t["longitude"][row],
                        )
                    )
                level_conf = {p.level: float(c) for p, c in zip(places, conf[b, j], strict=True)}
                answers.append(
                    Answer(
                        places,
                        float(coords[b, j, 0]),
                        float(coords[b, j, 1]),
                        float(scores[b, j]),
                        float(conf[b, j, -1]),
                        level_conf,
                    )
                )
            out.append(Prediction(str(ident), answers))
        return out

    def predict_photos(
        self, photos: list[tuple[str, bytes]], *, top_k: int = 5, batch_size: int = 32
    ) -> tuple[list[Prediction], list[Rejected]]:
        """``(id, bytes)`` photos → predictions and the photos that could not be read."""
        if self.preprocess is None:
            raise InputError(
                "this file takes image features, not photos (exported without its encoder)"
            )
        preds, rejected = [], []
        for s in range(0, len(photos), batch_size):
            arrays, ids = [], []
            for ident, data in photos[s : s + batch_size]:
                img, reason = decode(data)
                if img is None:
                    rejected.append(Rejected(ident, reason))
                    continue
                arrays.append(self.preprocess.array(img))
                ids.append(ident)
            if arrays:
                preds += self.predict_arrays(np.stack(arrays), ids, top_k)
        return preds, rejected

    def predict_images(self, sources: list[Path], *, top_k: int = 5, batch_size: int = 32):
        """Image files, folders or archives → ``(predictions, rejected)``, read and answered
        ``batch_size`` photos at a time."""
        from hierloc.data.images import Opener, collect_items

        items = collect_items([Path(s) for s in sources])
        opener = Opener()
        preds, rejected = [], []
        try:
            for s in range(0, len(items), batch_size):
                photos = []
                for item in items[s : s + batch_size]:
                    try:
                        photos.append((item.id, opener.read(item)))
                    except OSError as e:
                        rejected.append(Rejected(item.id, f"unreadable: {e}"))
                got, bad = self.predict_photos(photos, top_k=top_k, batch_size=batch_size)
                preds += got
                rejected += bad
        finally:
            opener.close()
        return preds, rejected
