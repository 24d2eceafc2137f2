"""``hierloc semantic``: a semantic map (class per pixel) per image, precomputed like features —
GeoSURGE's second input.

The output is a feature store (:mod:`hierloc.data.features`) of ``uint8`` rows: each row is one
``size × size`` map (nearest-neighbour resized), flattened row-major; the manifest's ``encoder``
entry names the provider, its classes and the map size. Resumable like ``hierloc extract``
(same commit protocol); maps that cannot be made go to ``rejects.csv`` with their reason.

Segmentation providers (registry :data:`PROVIDERS`, :func:`register_provider`):

* ``bluemarble`` — the offline benchmark's pixel-aligned maps (``semantic_path`` column of its
  metadata; ocean, lake, lowland, upland, highland, ice);
* ``files`` — maps supplied by the user: a column of paths to single-band PNG/TIFF images or
  ``.npy`` arrays holding class ids, with the class names given (``--classes``);
* ``oneformer`` — OneFormer trained on ADE20K (150 classes) through transformers, run on the
  images themselves (``path`` column); a local folder or a hub id when online; a clear error
  when the weights are absent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hierloc.data.bluemarble import SEMANTIC_CLASSES
from hierloc.data.extract import _summary, fingerprint
from hierloc.data.features import FeatureStoreWriter, check_store_output
from hierloc.data.images import Opener, collect_items, decode
from hierloc.errors import HierlocError, InputError, missing_dependency

log = logging.getLogger(__name__)
PROVIDERS: dict[str, Callable[..., SegmentationProvider]] = {}
ONEFORMER_DEFAULT = "shi-labs/oneformer_ade20k_swin_tiny"


def register_provider(name: str):
    def deco(factory):
        PROVIDERS[name] = factory
        return factory

    return deco


class SegmentationProvider:
    """Makes class maps for items. ``column``: the metadata column it reads (map files or
    images); ``classes``: class names, index = class id."""

    name = "?"
    column = "path"
    classes: tuple[str, ...] = ()

    def describe(self) -> dict:
        return {"name": f"semantic:{self.name}", "classes": list(self.classes)}

    def native(self, blobs: list[bytes]) -> list[np.ndarray | str]:
        """Per item's bytes, its class map covering the whole image (any resolution, the
        image's aspect) or the reason it could not be made."""
        raise NotImplementedError

    def maps(self, blobs: list[bytes], size: int, preprocess=None) -> list[np.ndarray | str]:
        """Per item's bytes, a ``(size, size)`` uint8 map of exactly the pixels the encoder
        sees after ``preprocess`` (its resize and centre crop; ``None``: the whole image), or
        the reason it could not be made."""
        return [
            m if isinstance(m, str) else aligned_map(m, size, preprocess).astype(np.uint8)
            for m in self.native(blobs)
        ]


def aligned_map(m: np.ndarray, size: int, preprocess=None, box=None) -> np.ndarray:
    """Nearest-neighbour ``size × size`` samples (at cell centres) of the part of the map that
    the encoder sees after ``preprocess`` (a :class:`~hierloc.encoders.base.Preprocess`; the map
    covers the whole image, at any resolution), or of ``box`` (``left, top, right, bottom`` as
    fractions, e.g. one of ``Preprocess.ten_crop``'s); neither: the whole map. Map cell
    ``(i, j)`` then covers the same pixels as the encoder's token ``(i, j)`` of a
    ``size × size`` grid."""
    h, w = m.shape
    if box is not None:
        left, top, right, bottom = box
    elif preprocess is not None:
        left, top, right, bottom = preprocess.crop_box(w, h)
    else:
        left, top, right, bottom = (0.0, 0.0, 1.0, 1.0)
    centres = (np.arange(size) + 0.5) / size
    rows = np.floor((top + centres * (bottom - top)) * h).astype(np.int64).clip(0, h - 1)
    cols = np.floor((left + centres * (right - left)) * w).astype(np.int64).clip(0, w - 1)
    return m[rows][:, cols]


class MapFiles(SegmentationProvider):
    """Class maps stored as files: single-band images (``L``, ``P``, ``I``) or ``.npy``."""

    name = "files"
    column = "semantic_path"

    def __init__(self, classes: tuple[str, ...], column: str = "semantic_path") -> None:
        if not classes:
            raise InputError(
                "the files provider needs the class names: --classes a,b,c "
                "(or --classes N for N unnamed classes)"
            )
        self.classes, self.column = tuple(classes), column

    def decode(self, data: bytes) -> np.ndarray | str:
        if data[:6] == b"\x93NUMPY":
            try:
                m = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as e:
                return f"unreadable .npy: {e}"
        else:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    if im.mode not in ("L", "P", "I", "I;16"):
                        return (
                            f"not a class map: a {im.mode} image (use a single-band image "
                            "of class ids)"
                        )
                    m = np.asarray(im)
            except (UnidentifiedImageError, OSError) as e:
                return f"unreadable map: {e}"
        if m.ndim != 2 or m.size == 0:
            return f"not a class map: shape {m.shape} (expected height × width)"
        if not np.issubdtype(m.dtype, np.integer):
            return f"not a class map: {m.dtype} values (expected integer class ids)"
        if m.min() < 0 or m.max() >= len(self.classes):
            return (
                f"class id {int(m.max()) if m.max() >= len(self.classes) else int(m.min())} "
                f"outside 0–{len(self.classes) - 1} ({len(self.classes)} classes)"
            )
        return m

    def native(self, blobs: list[bytes]) -> list[np.ndarray | str]:
        return [self.decode(data) for data in blobs]


@register_provider("files")
def _files(classes: tuple[str, ...] = (), column: str = "semantic_path", **_) -> MapFiles:
    return MapFiles(classes, column)


@register_provider("bluemarble")
def _bluemarble(**_) -> MapFiles:
    provider = MapFiles(SEMANTIC_CLASSES, "semantic_path")
    provider.name = "bluemarble"
    return provider


class OneFormer(SegmentationProvider):
    """OneFormer (ADE20K) semantic segmentation of the images through transformers."""

    name = "oneformer"
    column = "path"

    def __init__(self, model: str | None = None, device: str = "cpu") -> None:
        ref = model or ONEFORMER_DEFAULT
        try:
            import transformers
        except ImportError as e:
            raise missing_dependency(e.name, "the oneformer segmentation provider") from e
        local = Path(ref).expanduser()
        kwargs = {"local_files_only": True} if local.exists() else {}
        source = str(local) if local.exists() else ref
        try:
            self.processor = transformers.OneFormerProcessor.from_pretrained(source, **kwargs)
            self.model = (
                transformers.OneFormerForUniversalSegmentation.from_pretrained(source, **kwargs)
                .eval()
                .to(device)
            )
        except (OSError, ValueError) as e:
            where = f"folder {local}" if local.exists() else f"hub id {ref!r} and the local cache"
            raise HierlocError(
                f"segmentation provider 'oneformer': weights not found (looked in the {where}; "
                f"{type(e).__name__}: {str(e).splitlines()[0][:200]}). Download them on a "
                f"machine with access (huggingface-cli download {ONEFORMER_DEFAULT} --local-dir "
                "DIR) and pass --model DIR, or use --provider files with maps you made."
            ) from e
        labels = self.model.config.id2label
        self.classes = tuple(labels[i] for i in range(len(labels)))
        self.device, self.ref = device, ref

    def describe(self) -> dict:
        return super().describe() | {"model": self.ref}

    def native(self, blobs: list[bytes]) -> list[np.ndarray | str]:
        """Segmentation at each image's own size (so training, evaluation and prediction cut
        the same pixels from it)."""
        images, out = [], []
        for data in blobs:
            img, reason = decode(data)
            out.append(reason if img is None else None)
            if img is not None:
                images.append(img)
        if images:
            inputs = self.processor(
                images=images, task_inputs=["semantic"] * len(images), return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                raw = self.model(**inputs)
            segs = self.processor.post_process_semantic_segmentation(
                raw, target_sizes=[(im.height, im.width) for im in images]
            )
            it = iter(segs)
            out = [next(it).cpu().numpy().astype(np.uint8) if o is None else o for o in out]
        return out


@register_provider("oneformer")
def _oneformer(model: str | None = None, device: str = "cpu", **_) -> OneFormer:
    return OneFormer(model, device)


def create_provider(name: str, **kwargs) -> SegmentationProvider:
    if name not in PROVIDERS:
        raise InputError(
            f"unknown segmentation provider {name!r}; choose one of {sorted(PROVIDERS)}"
        )
    return PROVIDERS[name](**kwargs)


def parse_classes(spec: str | None) -> tuple[str, ...]:
    """``"a,b,c"`` → names; ``"N"`` → ``("0", …, "N-1")``; ``None`` → ``()``."""
    if not spec:
        return ()
    if spec.strip().isdigit():
        n = int(spec)
        if not 1 <= n <= 256:
            raise InputError(f"--classes {n}: between 1 and 256 classes (maps are stored as uint8)")
        return tuple(str(k) for k in range(n))
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if len(names) > 256:
        raise InputError(f"--classes: {len(names)} names; at most 256 (maps are stored as uint8)")
    return names


def build_semantic_store(
    metadata: str | Path,
    out: str | Path,
    provider: str | SegmentationProvider = "bluemarble",
    size: int = 224,
    id_column: str = "id",
    root: str | Path | None = None,
    batch_size: int = 32,
    commit_every: int = 16,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    crop=None,
    **provider_args,
) -> dict:
    """Maps of every record of ``metadata`` into the store ``out``; returns a summary.

    ``crop``: the image encoder's :class:`~hierloc.encoders.base.Preprocess`; each map then
    covers exactly the pixels the encoder sees (its resize and centre crop), cell ``(i, j)``
    of the map under token ``(i, j)``. Recorded in the manifest; GeoSURGE refuses a token
    store whose encoder crops differently."""
    if size < 1 or size > 4096:
        raise InputError(f"--size {size}: maps are 1 to 4096 pixels a side")
    check_store_output(out, overwrite, [metadata, root])
    prov = (
        provider
        if isinstance(provider, SegmentationProvider)
        else create_provider(provider, **provider_args)
    )
    items = collect_items([Path(metadata)], id_column, prov.column, Path(root) if root else None)
    desc = prov.describe() | {
        "map_size": int(size),
        "crop": None if crop is None else _crop_key(crop.to_dict()),
    }
    writer = FeatureStoreWriter(
        out,
        len(items),
        size * size,
        desc,
        fingerprint(items, desc),
        overwrite=overwrite,
        dtype="uint8",
    )
    resumed = writer.items_done
    if writer.complete:
        return _summary(writer, items, resumed)
    opener = Opener()
    rows, ids, item_idx, rejects, batches = [], [], [], [], 0
    try:
        for start in range(writer.items_done, len(items), batch_size):
            chunk = list(range(start, min(len(items), start + batch_size)))
            blobs, readable = [], []
            for i in chunk:
                try:
                    blobs.append(opener.read(items[i]))
                    readable.append(i)
                except (OSError, KeyError) as e:
                    rejects.append((i, items[i].id, f"unreadable: {e}"))
            made = prov.maps(blobs, size, crop) if blobs else []
            for i, m in zip(readable, made, strict=True):
                if isinstance(m, str):
                    rejects.append((i, items[i].id, m))
                else:
                    rows.append(m.reshape(-1))
                    ids.append(items[i].id)
                    item_idx.append(i)
            batches += 1
            if batches % commit_every == 0 or chunk[-1] == len(items) - 1:
                writer.commit(
                    np.stack(rows) if rows else None, ids, item_idx, rejects, chunk[-1] + 1
                )
                rows, ids, item_idx, rejects = [], [], [], []
            if progress is not None:
                progress(chunk[-1] + 1, len(items))
    finally:
        opener.close()
    if writer.items_done < len(items) or not len(items):
        writer.commit(None, [], [], rejects, len(items))
    writer.finish()
    return _summary(writer, items, resumed)


def semantic_info(store) -> dict:
    """``{"classes": [...], "map_size": S, "provider": name}`` of a semantic store, or an error
    naming the store when it holds something else."""
    enc = store.manifest.get("encoder") or {}
    if not str(enc.get("name", "")).startswith("semantic:") or "map_size" not in enc:
        raise InputError(
            f"{store.path}: not a semantic map store; make one with hierloc "
            "semantic METADATA -o FOLDER"
        )
    return {
        "classes": list(enc["classes"]),
        "map_size": int(enc["map_size"]),
        "provider": enc["name"].split(":", 1)[1],
        "crop": enc.get("crop"),
    }


def _crop_key(preprocess: dict) -> dict:
    """What decides which pixels a map covers: the encoder's input size and crop fraction."""
    return {"size": int(preprocess["size"]), "crop_pct": float(preprocess["crop_pct"])}


def check_alignment(tokens_store, semantic_store) -> None:
    """The semantic maps must have been cut as the token store's encoder cuts its images."""
    crop = semantic_info(semantic_store)["crop"]
    pre = ((tokens_store.manifest.get("encoder") or {}).get("preprocess")) or {}
    want = _crop_key(pre) if "size" in pre and "crop_pct" in pre else None
    if crop != want:
        raise InputError(
            f"{semantic_store.path}: its maps are cut as {crop or 'the whole image'} but "
            f"{tokens_store.path}'s encoder sees {want}; rebuild the maps with hierloc "
            f"semantic --encoder {((tokens_store.manifest.get('encoder') or {}).get('name'))} "
            "so that each map cell lies under its token"
        )
