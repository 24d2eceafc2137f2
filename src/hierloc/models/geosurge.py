"""GeoSURGE's semantic fusion module (§III-B): semantic tokens attend to the backbone's RGB
tokens through latent multi-head cross-attention.

* Semantic tokens: the semantic map (class per pixel) one-hot encoded, cut into ``patch × patch``
  patches, each linearly projected to ``dim`` (128) — a convolution with kernel = stride =
  ``patch`` over the one-hot map is exactly that projection — plus learned positional
  embeddings (bilinearly resized for other grids), and a CLS token first. **Decision** (the
  paper's text and Figure 2 leave it open): the semantic CLS token is the map's own summary, a
  learned vector plus the mean of the patch projections (the projection of the map's mean
  patch), not a learned constant. With a constant, the CLS query of the first block would not
  depend on the map and semantic tokens never attend to each other, so after one block the
  fused CLS — the output — would depend on the RGB tokens only, and Table VIII's one-block
  row would be RGB-only by construction; with the summary, the map reaches the output from
  the first block while the module stays a latent cross-attention with semantic queries.
* Fusion block (the paper's text: queries of dimension 128, everything else in the backbone's
  dimension): ``f = f + Attn(LN(s), LN(f))``, ``f = f + MLP(LN(f))`` where ``s`` are the semantic
  tokens (queries, the same in every block) and ``f`` the RGB tokens (keys/values), fused in
  place token by token — so the semantic and RGB grids must match (14×14 patches of the map
  for CLIP ViT-L/14's grid). **Latent** attention: ``f`` is compressed to a ``latent``-d vector
  per token (64), from which each head's keys and values are projected (multi-head latent
  attention). ``blocks`` of them in series (0–3); the map reaches the fused CLS from the first
  block on (through the CLS query), and through the fused patch tokens from the second.
* Output: the fused CLS → LayerNorm → linear → the image feature. With 0 blocks there is no
  fusion: the backbone's CLS token → LayerNorm → linear.

Shapes: ``B`` images, ``T`` RGB tokens (CLS first), ``C`` semantic classes, ``(H, W)`` map size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hierloc.checks import ConfigValueError, integer, number, one_of
from hierloc.data.semantic import check_alignment, semantic_info
from hierloc.errors import InputError
from hierloc.models.registry import register_model


class LatentCrossAttention(nn.Module):
    """Multi-head cross-attention whose keys and values come from a low-dimensional latent of
    the context: ``c = ctx·W_down`` (``latent``-d), ``K = c·W_k``, ``V = c·W_v``.

    The keys have no bias: a bias ``b`` adds ``q·b`` to every logit of query ``q`` alike, which
    the softmax cancels, so its gradient is zero up to rounding — and Adam turns that rounding
    noise into full-size steps, so the parameter drifts at random (and data-parallel runs
    stopped matching single-process ones)."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int = 8,
        latent: int = 64,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.down = nn.Linear(context_dim, latent, bias=False)
        self.k = nn.Linear(latent, dim, bias=False)
        self.v = nn.Linear(latent, dim)
        self.out = nn.Linear(dim, out_dim or dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x (B, Tq, dim)``, ``context (B, Tk, context_dim)`` → ``(B, Tq, out_dim)``."""
        B, Tq, d = x.shape
        h = self.heads
        c = self.down(context)  # (B, Tk, latent)

        def split(t):
            return t.view(B, -1, h, d // h).transpose(1, 2)  # (B, h, T, d/h)

        o = nn.functional.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(c)), split(self.v(c))
        )
        return self.out(o.transpose(1, 2).reshape(B, Tq, d))  # (B, Tq, out_dim)


class FusionBlock(nn.Module):
    """``f ← f + Attn(LN(s), LN(f))``; ``f ← f + MLP(LN(f))`` (semantic queries ``s``)."""

    def __init__(self, query_dim: int, dim: int, heads: int, latent: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = LatentCrossAttention(query_dim, dim, heads, latent, out_dim=dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, fused: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        fused = fused + self.attn(self.norm_q(semantic), self.norm_kv(fused))
        return fused + self.mlp(self.norm_mlp(fused))


class SemanticFusion(nn.Module):
    """Semantic map + RGB tokens → image feature ``(B, out_dim)``."""

    def __init__(
        self,
        classes: int,
        rgb_dim: int,
        out_dim: int,
        dim: int = 128,
        blocks: int = 3,
        heads: int = 8,
        latent: int = 64,
        patch: int = 16,
        grid: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        if not 0 <= blocks:
            raise InputError(f"blocks must be >= 0, got {blocks}")
        self.classes, self.patch, self.grid = classes, patch, grid
        self.blocks = nn.ModuleList(
            [FusionBlock(dim, rgb_dim, heads, latent) for _ in range(blocks)]
        )
        if blocks:
            self.embed = nn.Conv2d(classes, dim, kernel_size=patch, stride=patch)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, dim, *grid) * 0.02)
        self.norm = nn.LayerNorm(rgb_dim)
        self.head = nn.Linear(rgb_dim, out_dim)

    def semantic_tokens(self, semantic: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` class ids → ``(B, 1 + (H/p)·(W/p), dim)`` (CLS first)."""
        if semantic.dim() != 3:
            raise ValueError(
                f"semantic maps must be (B, H, W) class ids, got {tuple(semantic.shape)}"
            )
        if int(semantic.min()) < 0 or int(semantic.max()) >= self.classes:
            raise ValueError(f"semantic class ids must lie in [0, {self.classes})")
        B, H, W = semantic.shape
        if H % self.patch or W % self.patch:
            raise ValueError(f"map size {H}×{W} is not a multiple of the patch {self.patch}")
        onehot = nn.functional.one_hot(semantic.long(), self.classes).permute(0, 3, 1, 2)
        tok = self.embed(onehot.to(self.embed.weight.dtype))  # (B, dim, H/p, W/p)
        summary = tok.mean(dim=(2, 3))[:, None, :]  # (B, 1, dim): the map's mean patch
        pos = self.pos
        if tok.shape[-2:] != pos.shape[-2:]:  # another grid: resize the learned embeddings
            pos = nn.functional.interpolate(
                pos, size=tok.shape[-2:], mode="bilinear", align_corners=False
            )
        tok = (tok + pos).flatten(2).transpose(1, 2)  # (B, N, dim)
        return torch.cat([self.cls + summary, tok], 1)

    def forward(self, rgb_tokens: torch.Tensor, semantic: torch.Tensor | None) -> torch.Tensor:
        """``rgb_tokens (B, T, rgb_dim)`` (CLS first) and ``semantic (B, H, W)`` → features."""
        fused = rgb_tokens
        if len(self.blocks):
            if semantic is None:
                raise ValueError("the fusion blocks need a semantic map")
            sem = self.semantic_tokens(semantic)
            if sem.shape[1] != fused.shape[1]:
                raise ValueError(
                    f"the semantic map gives {sem.shape[1]} tokens but the backbone "
                    f"{fused.shape[1]}: use a map of (grid × patch) pixels matching the "
                    "backbone's patch grid"
                )
            for block in self.blocks:
                fused = block(fused, sem)
        return self.head(self.norm(fused[:, 0]))


def reference_attention(q, k, v, heads: int) -> torch.Tensor:
    """Plain multi-head attention ``softmax(QKᵀ/√d_h)V`` per head, ``(B, T, d)`` inputs (for
    tests: written out, no fused kernel)."""
    B, Tq, d = q.shape
    dh = d // heads
    qh = q.view(B, Tq, heads, dh).transpose(1, 2)
    kh = k.view(B, -1, heads, dh).transpose(1, 2)
    vh = v.view(B, -1, heads, dh).transpose(1, 2)
    w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    return (w @ vh).transpose(1, 2).reshape(B, Tq, d)


# -- the model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeoSurgeConfig:
    embed_dim: int = 768  # cell embeddings and the image feature (paper)
    depth: int = 7  # partitions used, the coarsest first (Table VII: 1, 3, 5, 7)
    head: str = "cells"  # cells: learned cell embeddings + InfoNCE | classify: a plain
    # classification layer per partition (Table VI)
    blocks: int = 3  # fusion blocks (Table VIII: 0–3)
    fusion_dim: int = 128  # semantic tokens / queries
    heads: int = 8
    latent: int = 64  # latent of the keys and values
    rgb_dim: int = 0  # 0: fuse in the backbone's token dim (paper); N: project the tokens to N
    # first (a CPU-sized model: 1280-d EfficientNet tokens make 13 M-parameter fusion MLPs)
    tau_init: float = 0.07  # per-partition temperature (learned)
    tau_min: float = 0.01  # clamp, as CLIP's logit scale ≤ 100
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for key in ("embed_dim", "depth", "fusion_dim", "heads", "latent", "mlp_ratio"):
            integer(key, getattr(self, key), 1)
        integer("blocks", self.blocks, 0)
        integer("rgb_dim", self.rgb_dim, 0)
        one_of("head", self.head, ("cells", "classify"))
        if self.fusion_dim % self.heads:
            raise ConfigValueError(
                "heads", self.heads, f"a divisor of fusion_dim ({self.fusion_dim})"
            )
        number("tau_min", self.tau_min, 0, low_open=True)
        number("tau_init", self.tau_init, self.tau_min)


@dataclass(frozen=True)
class GeoSurgeInputs:
    """What the model needs to know about its inputs (from the token and semantic stores)."""

    tokens: int  # T (CLS included when there is one)
    token_dim: int  # C
    grid: tuple[int, int]  # the backbone's patch grid
    cls_token: bool  # whether token 0 is a CLS (else the mean token serves as CLS)
    classes: int  # semantic classes (0 without semantic maps)
    map_size: int  # semantic map side in pixels (0 without)


def store_inputs(tokens, semantic) -> GeoSurgeInputs:
    """The model's input description from the stores' manifests (clear errors otherwise)."""
    enc = tokens.manifest.get("encoder") or {}
    if enc.get("output") != "tokens":
        raise InputError(
            f"{tokens.path}: holds pooled features, not tokens; GeoSURGE needs "
            "hierloc extract --tokens"
        )
    T, C = enc["tokens"]
    info = semantic_info(semantic) if semantic is not None else {"classes": [], "map_size": 0}
    if semantic is not None:
        check_alignment(tokens, semantic)
    return GeoSurgeInputs(
        tokens=int(T),
        token_dim=int(C),
        grid=tuple(enc["token_grid"]),
        cls_token=bool(enc["cls_token"]),
        classes=len(info["classes"]),
        map_size=int(info["map_size"]),
    )


def check_grid(config: GeoSurgeConfig, inputs: GeoSurgeInputs) -> None:
    """With fusion, the semantic maps must divide into the backbone's square patch grid."""
    side = inputs.grid[0]
    if config.blocks and (not inputs.map_size or inputs.map_size % side or side != inputs.grid[1]):
        raise InputError(
            f"semantic maps of {inputs.map_size} px do not divide into the backbone's "
            f"{inputs.grid[0]}×{inputs.grid[1]} patch grid; make them with hierloc "
            f"semantic --size N·{side} (e.g. {side * 4})"
        )


class GeoSurge(nn.Module):
    """Tokens + semantic map → image feature → per-partition log-probabilities over cells."""

    def __init__(
        self, config: GeoSurgeConfig, inputs: GeoSurgeInputs, cell_counts: list[int]
    ) -> None:
        super().__init__()
        c = config
        if c.head not in ("cells", "classify"):
            raise InputError(f"model.head must be cells or classify, got {c.head!r}")
        if not 1 <= c.depth <= len(cell_counts):
            raise InputError(
                f"model.depth {c.depth}: the cells folder has {len(cell_counts)} partitions; "
                f"set model.depth from 1 to {len(cell_counts)}, or build the cells with more "
                "--tau-max values"
            )
        self.config, self.inputs = config, inputs
        self.cell_counts = list(cell_counts[: c.depth])
        rgb = c.rgb_dim or inputs.token_dim
        self.proj = nn.Linear(inputs.token_dim, rgb) if c.rgb_dim else nn.Identity()
        check_grid(c, inputs)
        patch = inputs.map_size // inputs.grid[0] if c.blocks else 1
        self.fusion = SemanticFusion(
            max(1, inputs.classes),
            rgb,
            c.embed_dim,
            dim=c.fusion_dim,
            blocks=c.blocks,
            heads=c.heads,
            latent=c.latent,
            patch=patch,
            grid=inputs.grid,
        )
        if c.head == "cells":
            self.cells = nn.ParameterList(
                [nn.Parameter(torch.randn(n, c.embed_dim) * 0.02) for n in self.cell_counts]
            )
            self.log_tau = nn.Parameter(torch.full((c.depth,), math.log(c.tau_init)))
        else:
            self.classifiers = nn.ModuleList([nn.Linear(c.embed_dim, n) for n in self.cell_counts])

    def features(self, tokens: torch.Tensor, semantic: torch.Tensor | None) -> torch.Tensor:
        """``tokens (B, T, C)`` (or flattened ``(B, T·C)``), ``semantic (B, S, S)`` class ids
        (or flattened) → image features ``(B, embed_dim)``."""
        i = self.inputs
        x = tokens.reshape(len(tokens), i.tokens, i.token_dim).float()
        x = self.proj(x)
        if not i.cls_token:  # a CNN's feature map: the mean token stands in for the CLS
            x = torch.cat([x.mean(dim=1, keepdim=True), x], 1)
        if semantic is not None and self.config.blocks:
            semantic = semantic.reshape(len(semantic), i.map_size, i.map_size).long()
        return self.fusion(x, semantic if self.config.blocks else None)

    def tau(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(min=self.config.tau_min)

    def logits(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Per partition ``(B, E_p)``: cosine similarity / τ_p (cells) or the classifier's."""
        if self.config.head == "classify":
            return [head(feats) for head in self.classifiers]
        f = nn.functional.normalize(feats.float(), dim=1)
        tau = self.tau()
        return [f @ nn.functional.normalize(e, dim=1).T / tau[p] for p, e in enumerate(self.cells)]

    def forward(self, tokens, semantic) -> list[torch.Tensor]:
        return self.logits(self.features(tokens, semantic))


def ancestors(parents: list[np.ndarray]) -> list[np.ndarray]:
    """For the finest of ``D`` partitions, each cell's row in every partition ``(D, E_leaf)``
    from the per-partition parent rows (``parents[p][r]`` = row in partition ``p-1``)."""
    leaf = len(parents) - 1
    rows = [np.arange(len(parents[leaf]), dtype=np.int64)]
    for p in range(leaf, 0, -1):
        rows.insert(0, np.asarray(parents[p], dtype=np.int64)[rows[0]])
    if any((r < 0).any() for r in rows):
        raise ValueError("a cell has no parent in the coarser partition: not a nested hierarchy")
    return rows


def product_scores(log_probs: list[torch.Tensor], anc: list[np.ndarray]) -> torch.Tensor:
    """Hierarchical inference: every finest cell scored by the product of its probability and
    its ancestors' (a sum of log-probabilities), ``(B, E_leaf)``, vectorised."""
    out = log_probs[-1].clone()
    for p in range(len(log_probs) - 1):
        out += log_probs[p][:, torch.from_numpy(anc[p]).to(out.device)]
    return out


@register_model("geosurge")
def _create(config: GeoSurgeConfig, inputs: GeoSurgeInputs, cell_counts: list[int]) -> GeoSurge:
    return GeoSurge(config, inputs, cell_counts)
