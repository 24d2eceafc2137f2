"""``hierloc export``: a HierLoc model folder as one ONNX file — the image encoder (optional),
the query head and the beam search itself.

The beam search is unrolled over the levels with a fixed width ``W``: the top level's ``W``
best entities (``TopK`` over all of them), then per level the children of the beam read from
the CSR children lists (``Gather`` of ``ptr``, then of ``C`` slots from the first child, ``C``
the largest family of the level; slots past a family's end score ``−inf``), path scores
accumulated, the ``W`` best paths kept (``TopK`` over ``W × C`` candidates), the parents' paths
carried by ``GatherElements``. Distances are the model's (squared) manifold distances computed
in float64 from the stored entity points (float32 or float16), as the Python search does
(Lorentz models, the paper's; the Euclidean and sphere ablations are not exported); standard
opset 17 only (MatMul, Gather, GatherElements, TopK, Reshape, Where, Log, Sqrt, Softmax…), no
contrib ops, no Loop or If.

Inputs: ``features`` ``(B, D)`` float32 (precomputed image features), or with the encoder
``pixels`` ``(B, 3, S, S)`` float32, the photo resized, centre-cropped and normalised as the
model's encoder expects (:class:`hierloc.data.preprocess.Preprocess`; its settings ride in the
metadata). Outputs: ``paths`` ``(B, W, L)`` int64 entity rows per level (−1: no path),
``scores`` ``(B, W)`` float64 path scores, ``coordinates`` ``(B, W, 2)`` the finest entity's
mean latitude and longitude, ``confidences`` ``(B, W, L)`` per level (the model folder's
calibrated confidence when it has one, else the beam's mass; :mod:`hierloc.locate.hierloc`).
The entity ids, names and coordinates, the levels, the preprocessing, the width and the format
version are a JSON document in the model's metadata (key ``hierloc``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hierloc.data.writers import atomic_path, check_output_file
from hierloc.errors import InputError
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.locate.hierloc import Geolocator, entity_probability, level_confidences

FORMAT = "hierloc-onnx"
# a level's candidates (W × its largest family) are gathered when they are at most a quarter
# of its entities; otherwise the level is scored whole (one MatMul) and their scores gathered:
# the same scores, without materialising W × C vectors per image for heavy-tailed families
GATHER_SHARE = 4
VERSION = 1
OPSET = 17


class BeamGraph(nn.Module):
    """Features → the beam's paths, scores, coordinates and confidences (module doc)."""

    def __init__(self, geo: Geolocator, width: int, half: bool = False, encoder=None) -> None:
        super().__init__()
        idx = geo.index
        m = geo.manifest
        self.encoder = encoder
        self.query = geo.query.float().eval()
        store = torch.float16 if half else torch.float32
        self.attends = geo.context is not None  # the attention's keys/values of every entity
        for lv, c in enumerate(geo.context or []):  # stored as the entity points are
            self.register_buffer(f"kv{lv}", c.to(store).contiguous())
        self.manifold = idx.manifold
        self.squared = bool(m["squared"])
        if m["manifold"] != "lorentz":
            raise InputError(
                f"hierloc export writes Lorentz models (the paper's); this one is {m['manifold']}"
            )
        self.levels = idx.levels
        self.width = width
        for lv in range(self.levels):
            # the manifold's database search vectors (float64 in the index), stored narrower
            self.register_buffer(f"v{lv}", idx.vectors(lv).to(store).contiguous())
        self.families = []  # the largest family per level: the candidates per beam slot
        for lv in range(self.levels - 1):
            ptr, child = idx.children(lv)
            self.register_buffer(f"p{lv}", torch.from_numpy(np.asarray(ptr, np.int64)))
            self.register_buffer(f"c{lv}", torch.from_numpy(np.asarray(child, np.int64)))
            self.families.append(max(1, int(np.diff(ptr).max())) if len(ptr) > 1 else 1)
        names = geo.names.levels
        self.register_buffer("coords", torch.from_numpy(np.ascontiguousarray(names[-1][2])))
        temps = geo.level_temperatures()
        self.temperatures = temps
        self.tau = geo.raw_temperature

    def vectors(self, lv: int) -> torch.Tensor:
        return getattr(self, f"v{lv}").double()

    def _score(self, ip: torch.Tensor) -> torch.Tensor:
        """−distance from search inner products, as the Python search scores them."""
        return self.manifold.neg_dist_from_ip(ip, self.squared)

    def forward(self, x: torch.Tensor):
        if self.encoder is not None:
            x = self.encoder(x)
        context = None
        if self.attends:
            context = [getattr(self, f"kv{lv}").float() for lv in range(self.levels)]
        z = self.query.image_embeddings(x.float(), context=context).double()
        q = self.manifold.search_vectors(self.manifold.project(z), "query")  # q·x = ⟨z, x⟩_L
        B = q.shape[0]
        v0 = self.vectors(0)
        k0 = min(self.width, v0.shape[0])
        s0 = self._score(q @ v0.T)
        scores, ids = torch.topk(s0, k0, dim=1)
        paths = ids[:, :, None]
        for lv in range(1, self.levels):
            ptr, child = getattr(self, f"p{lv - 1}"), getattr(self, f"c{lv - 1}")
            C = self.families[lv - 1]
            start = ptr[ids]  # (B, W): the beam's children are child[start : start + count]
            count = ptr[ids + 1] - start
            j = torch.arange(C, dtype=torch.long)
            valid = j[None, None, :] < count[:, :, None]  # (B, W, C)
            pos = torch.where(
                valid,
                start[:, :, None] + j[None, None, :],
                torch.zeros_like(valid, dtype=torch.long),
            )
            safe = child[pos]
            W = ids.shape[1]
            stored = getattr(self, f"v{lv}")
            if W * C * GATHER_SHARE <= stored.shape[0]:  # few candidates: gather them
                vec = stored[safe].double()  # (B, W, C, D): the candidates only, then widened
                s = self._score((vec * q[:, None, None, :]).sum(-1))
            else:  # big families: score the whole level once, read the candidates' scores
                level = self._score(q @ self.vectors(lv).T)  # (B, E)
                s = torch.gather(level, 1, safe.reshape(B, W * C)).reshape(B, W, C)
            s = s + scores[:, :, None]
            s = torch.where(valid, s, torch.full_like(s, float("-inf")))
            k = min(self.width, W * C)
            scores, flat = torch.topk(s.reshape(B, W * C), k, dim=1)
            parent = torch.div(flat, C, rounding_mode="floor")
            ids = torch.gather(safe.reshape(B, W * C), 1, flat)
            keep = torch.gather(paths, 1, parent[:, :, None].expand(-1, -1, paths.shape[2]))
            paths = torch.cat([keep, ids[:, :, None]], dim=2)
        dead = torch.isinf(scores)[:, :, None]
        paths = torch.where(dead, torch.full_like(paths, -1), paths)
        coords = self.coords[ids]
        conf = self._confidences(q, paths, scores)
        return paths, scores, coords, conf

    def _confidences(self, q, paths, scores) -> torch.Tensor:
        if self.temperatures is None:  # the beam's mass per entity and level
            return level_confidences(paths, scores, self.tau)
        return torch.stack(
            [
                entity_probability(self._score(q @ self.vectors(lv).T), paths[:, :, lv], t)
                for lv, t in enumerate(self.temperatures)
            ],
            dim=2,
        )


def _register_symbolics() -> None:
    """ONNX has Sinh, Cosh, Asinh and Acosh (opset 9); the TorchScript exporter names no
    symbolic for some of them: map them one to one."""
    for op in ("sinh", "cosh", "asinh", "acosh"):
        torch.onnx.register_custom_op_symbolic(
            f"aten::{op}", lambda g, x, _op=op: g.op(_op.capitalize(), x), 9
        )


OUTPUTS = ("paths", "scores", "coordinates", "confidences")


def write_graph(graph: BeamGraph, path, example: torch.Tensor, input_name: str) -> None:
    """``graph`` traced on ``example`` into an ONNX file at ``path``: one input (batch axis
    dynamic), the four outputs, opset :data:`OPSET`, the entity tables as stored."""
    _register_symbolics()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on the fixed shapes
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=list(OUTPUTS),
            dynamic_axes={input_name: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=False,  # folding would store the entity tables as float64
        )


def export_metadata(geo: Geolocator, width: int, half: bool, encoder) -> dict:
    """The document that rides in the ONNX file's metadata (key ``hierloc``)."""
    levels = []
    for lv, (ids, names, xy, _) in enumerate(geo.names.levels):
        levels.append(
            {
                "level": LEVEL_NAMES[lv] if lv < len(LEVEL_NAMES) else f"level{lv}",
                "ids": [str(i) for i in ids],
                "names": [str(n) for n in names],
                "latitude": [round(float(v), 6) for v in xy[:, 0]],
                "longitude": [round(float(v), 6) for v in xy[:, 1]],
            }
        )
    enc = geo.manifest.get("encoder")
    return {
        "format": FORMAT,
        "version": VERSION,
        "width": width,
        "float16": half,
        "input": "pixels" if encoder is not None else "features",
        "image_dim": geo.image_dim,
        "encoder": enc,
        "preprocess": None if encoder is None else encoder.preprocess.to_dict(),
        "calibrated": geo.level_temperatures() is not None,
        "levels": levels,
    }


def export_onnx(
    model_dir: str | Path,
    output: str | Path,
    width: int = 10,
    half: bool = False,
    with_encoder: bool = True,
) -> dict:
    """Write ``output`` (one ONNX file, module doc); returns its metadata."""
    import onnx

    from hierloc.locate import load_locator

    output = Path(output)
    check_output_file(output, [model_dir], (".onnx",), option="--output")
    if width < 1:
        raise InputError(f"--beam {width}: give a width ≥ 1")
    geo = load_locator(model_dir)
    if not isinstance(geo, Geolocator):
        raise InputError(
            f"{model_dir}: a {geo.family} model folder; hierloc export writes HierLoc models"
        )
    encoder = None
    if with_encoder:
        if geo.encoder_name is None:
            raise InputError(
                f"{model_dir}: the model names no image encoder (trained on features of "
                "unknown origin); export it with --features-input"
            )
        encoder = geo.image_encoder()
        encoder = getattr(encoder, "torch_encoder", encoder).eval()  # the torch graph
    graph = BeamGraph(geo, width, half, encoder).eval()
    if encoder is not None:
        size = encoder.preprocess.size
        example, name = torch.zeros(2, 3, size, size), "pixels"
    else:
        example, name = torch.zeros(2, geo.image_dim), "features"
    meta = export_metadata(geo, width, half, encoder)
    with atomic_path(output) as tmp:
        write_graph(graph, tmp, example, name)
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = "hierloc", json.dumps(meta, separators=(",", ":"))
        onnx.save(model, str(tmp))
    return meta
