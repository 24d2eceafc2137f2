"""Typed configs loaded from YAML, unknown keys rejected, dotted overrides, saved resolved.

cfg = load_config("run.yaml", overrides=["optim.lr=1e-3", "model.attention=false"])
save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hierloc.errors import InputError
from hierloc.losses import LossConfig
from hierloc.models.geosurge import GeoSurgeConfig
from hierloc.models.hierloc import HierLocConfig


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4  # paper
    weight_decay: float = 0.01
    riemannian_lr: float = 2e-4
    stabilize: int = 10  # re-project Lorentz anchors every N RiemannianAdam steps
    batch_size: int = 256  # paper: 16; larger for speed on CPU (documented)
    epochs: int = 5  # paper
    max_steps: int | None = None
    grad_clip: float = 1.0
    # learning-rate schedule, a pure function of the step (so resuming needs no extra state):
    # constant (the paper states none) | cosine (to 0 at the last step) | step (× step_gamma
    # per epoch, GeoSURGE's); linear warm-up over warmup_steps first
    schedule: str = "constant"
    warmup_steps: int = 0
    step_gamma: float = 0.5
    # approximation, off by default (0 = exact: every entity is embedded, attended to and a
    # negative each step). N > 0: per level with more than N entities, a uniform sample of N
    # (+ the global batch's positives, the same on every process) is embedded, attended to and
    # used as the negatives, with the sampled-softmax correction log((E-1)/(n-1)).
    sampled_entities: int = 0


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    val_every: int = 100  # steps
    checkpoint_every: int = 100  # steps
    keep_last: int = 2
    log_every: int = 10
    # bf16 autocast for the MLPs and attention ("auto": on CUDA only; on CPUs with native bf16
    # matmuls "bf16" halves the entity MLP's time, but is not bit-reproducible across
    # processes); the geometry and the loss always run in fp32
    precision: str = "auto"  # auto | fp32 | bf16
    # early stopping: stop after this many validations without improvement (0: off)
    patience: int = 0
    # beam width of the validation GeoScore (what "best" and early stopping follow)
    val_beam: int = 10


@dataclass(frozen=True)
class TrainConfig:
    model: HierLocConfig = field(default_factory=HierLocConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass(frozen=True)
class GeoSurgeTrainConfig:
    model: GeoSurgeConfig = field(default_factory=GeoSurgeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


# GeoSURGE's paper defaults (§III-C) over the shared ones: AdamW lr 1e-4, wd 1e-4, ×0.5 per
# epoch, early stopping with patience 4 (batch 1024 in the paper; 256 here for CPU memory)
GEOSURGE_DEFAULTS = {"optim": {"lr": 1e-4, "weight_decay": 1e-4, "schedule": "step",
                               "step_gamma": 0.5, "epochs": 10},
                     "run": {"patience": 4}}  # fmt: skip


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown config key {where}.{key}{hint}; known: {sorted(fields)}")
        ftype = fields[key].type
        sub = {"HierLocConfig": HierLocConfig, "LossConfig": LossConfig,
               "OptimConfig": OptimConfig, "RunConfig": RunConfig,
               "GeoSurgeConfig": GeoSurgeConfig}.get(str(ftype))  # fmt: skip
        if sub is not None:
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = _coerce(value, str(ftype), f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value, ftype: str, where: str):
    """YAML reads ``1e-3`` as a string (YAML 1.1 floats need a dot): convert to the field type."""
    if value is None or not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and ftype.startswith("float"):
            return float(value)
        return value
    try:
        if ftype.startswith("float"):
            return float(value)
        if ftype.startswith("int"):
            return int(value)
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a {ftype}") from None
    return value


def _set_dotted(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise InputError(f"override {dotted!r} is not KEY=VALUE (e.g. optim.lr=1e-3)")
    key, raw = dotted.split("=", 1)
    value = yaml.safe_load(raw)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def to_dict(cfg) -> dict:
    out = dataclasses.asdict(cfg)

    def lists(x):
        if isinstance(x, dict):
            return {k: lists(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return list(x)
        return x

    return lists(out)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                model: str = "hierloc"):  # fmt: skip
    """``TrainConfig`` (``model="hierloc"``) or ``GeoSurgeTrainConfig`` (``"geosurge"``, with
    the paper's defaults under the file and the overrides)."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"{path}: cannot read the config ({e})") from e
    for o in overrides or []:
        _set_dotted(data, o)
    if model == "geosurge":
        return _build(GeoSurgeTrainConfig, _merge(GEOSURGE_DEFAULTS, data), "config")
    if model != "hierloc":
        raise InputError(f"unknown model {model!r}; hierloc or geosurge")
    return _build(TrainConfig, data, "config")


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=True))
