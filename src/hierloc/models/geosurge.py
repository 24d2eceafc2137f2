"""GeoSURGE's semantic fusion module (§III-B): semantic tokens attend to the backbone's RGB
tokens through latent multi-head cross-attention.

* Semantic tokens: the semantic map (class per pixel) one-hot encoded, cut into ``patch × patch``
  patches, each linearly projected to ``dim`` (128) — a convolution with kernel = stride =
  ``patch`` over the one-hot map is exactly that projection — plus a CLS token and learned
  positional embeddings (bilinearly resized for other grids).
* Fusion block (the paper's text: queries of dimension 128, everything else in the backbone's
  dimension): ``f = f + Attn(LN(s), LN(f))``, ``f = f + MLP(LN(f))`` where ``s`` are the semantic
  tokens (queries, the same in every block) and ``f`` the RGB tokens (keys/values), fused in
  place token by token — so the semantic and RGB grids must match (14×14 patches of the map
  for CLIP ViT-L/14's grid). **Latent** attention: ``f`` is compressed to a ``latent``-d vector
  per token (64), from which each head's keys and values are projected (multi-head latent
  attention). ``blocks`` of them in series (0–3). The fused CLS depends on the semantic patches
  from the second block on (through the fused patch tokens); with one block only the semantic
  CLS query reaches it.
* Output: the fused CLS → LayerNorm → linear → the image feature. With 0 blocks there is no
  fusion: the backbone's CLS token → LayerNorm → linear.

Shapes: ``B`` images, ``T`` RGB tokens (CLS first), ``C`` semantic classes, ``(H, W)`` map size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LatentCrossAttention(nn.Module):
    """Multi-head cross-attention whose keys and values come from a low-dimensional latent of
    the context: ``c = ctx·W_down`` (``latent``-d), ``K = c·W_k``, ``V = c·W_v``."""

    def __init__(self, dim: int, context_dim: int, heads: int = 8, latent: int = 64,
                 out_dim: int | None = None) -> None:  # fmt: skip
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.down = nn.Linear(context_dim, latent, bias=False)
        self.k = nn.Linear(latent, dim)
        self.v = nn.Linear(latent, dim)
        self.out = nn.Linear(dim, out_dim or dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x (B, Tq, dim)``, ``context (B, Tk, context_dim)`` → ``(B, Tq, out_dim)``."""
        B, Tq, d = x.shape
        h = self.heads
        c = self.down(context)  # (B, Tk, latent)

        def split(t):
            return t.view(B, -1, h, d // h).transpose(1, 2)  # (B, h, T, d/h)

        o = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(c)),
                                                       split(self.v(c)))  # fmt: skip
        return self.out(o.transpose(1, 2).reshape(B, Tq, d))  # (B, Tq, out_dim)


class FusionBlock(nn.Module):
    """``f ← f + Attn(LN(s), LN(f))``; ``f ← f + MLP(LN(f))`` (semantic queries ``s``)."""

    def __init__(self, query_dim: int, dim: int, heads: int, latent: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = LatentCrossAttention(query_dim, dim, heads, latent, out_dim=dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))  # fmt: skip

    def forward(self, fused: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        fused = fused + self.attn(self.norm_q(semantic), self.norm_kv(fused))
        return fused + self.mlp(self.norm_mlp(fused))


class SemanticFusion(nn.Module):
    """Semantic map + RGB tokens → image feature ``(B, out_dim)``."""

    def __init__(self, classes: int, rgb_dim: int, out_dim: int, dim: int = 128,
                 blocks: int = 3, heads: int = 8, latent: int = 64, patch: int = 16,
                 grid: tuple[int, int] = (14, 14)) -> None:  # fmt: skip
        super().__init__()
        if not 0 <= blocks:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
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
        pos = self.pos
        if tok.shape[-2:] != pos.shape[-2:]:  # another grid: resize the learned embeddings
            pos = nn.functional.interpolate(pos, size=tok.shape[-2:], mode="bilinear",
                                            align_corners=False)  # fmt: skip
        tok = (tok + pos).flatten(2).transpose(1, 2)  # (B, N, dim)
        return torch.cat([self.cls.expand(B, -1, -1), tok], 1)

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
