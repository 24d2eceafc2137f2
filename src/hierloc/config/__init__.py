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

from hierloc.checks import ConfigValueError, flag, integer, number, one_of
from hierloc.errors import InputError
from hierloc.losses import LossConfig
from hierloc.models.geosurge import GeoSurgeConfig
from hierloc.models.hierloc import HierLocConfig

SCHEDULES = ("constant", "cosine", "step")


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

    def __post_init__(self) -> None:
        number("lr", self.lr, 0, low_open=True)
        number("weight_decay", self.weight_decay, 0)
        number("riemannian_lr", self.riemannian_lr, 0, low_open=True)
        integer("stabilize", self.stabilize, 1)
        integer("batch_size", self.batch_size, 1)
        integer("epochs", self.epochs, 1)
        if self.max_steps is not None:
            integer("max_steps", self.max_steps, 1)
        number("grad_clip", self.grad_clip, 0, low_open=True)
        one_of("schedule", self.schedule, SCHEDULES)
        integer("warmup_steps", self.warmup_steps, 0)
        number("step_gamma", self.step_gamma, 0, 1, low_open=True)
        integer("sampled_entities", self.sampled_entities, 0)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    val_every: int | str = 100  # steps, or "epoch": once per pass over the training set
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
    # save the best validation checkpoint as ``best`` (what hierloc index then takes); false:
    # validation is logged only and the run's model is its last step (for a validation split
    # too small to tell checkpoints apart: the best of many noisy scores is mostly noise)
    keep_best: bool = True

    def __post_init__(self) -> None:
        integer("seed", self.seed, 0)
        if self.val_every != "epoch":
            v = self.val_every
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigValueError("val_every", v, 'an integer ≥ 1 or "epoch"')
        for key in ("checkpoint_every", "keep_last", "log_every", "val_beam"):
            integer(key, getattr(self, key), 1)
        one_of("precision", self.precision, ("auto", "fp32", "bf16"))
        integer("patience", self.patience, 0)
        flag("keep_best", self.keep_best)


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


# the baselines (hierloc.locate.baselines): one config, section ``baseline:``
BASELINES = ("knn", "classify", "regress", "zeroshot", "prior")


@dataclass(frozen=True)
class BaselineConfig:
    epochs: int = 15
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 512
    dropout: float = 0.1
    batch_size: int = 256
    seed: int = 0
    temperature: float = 0.05  # cosine-similarity softmax for knn / zeroshot confidences

    def __post_init__(self) -> None:
        for key in ("epochs", "hidden", "batch_size"):
            integer(key, getattr(self, key), 1)
        integer("seed", self.seed, 0)
        number("lr", self.lr, 0, low_open=True)
        number("weight_decay", self.weight_decay, 0)
        number("dropout", self.dropout, 0, 1, high_open=True)
        number("temperature", self.temperature, 0, low_open=True)


@dataclass(frozen=True)
class BaselineTrainConfig:
    baseline: BaselineConfig = field(default_factory=BaselineConfig)


# GeoSURGE's paper defaults (§III-C) over the shared ones: AdamW lr 1e-4, wd 1e-4, ×0.5 per
# epoch, early stopping after 4 epochs without improvement (validated once an epoch; batch 1024
# in the paper, 256 here for CPU memory)
GEOSURGE_DEFAULTS = {
    "optim": {
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "schedule": "step",
        "step_gamma": 0.5,
        "epochs": 10,
    },
    "run": {"patience": 4, "val_every": "epoch"},
}


def _hints(cls) -> dict:
    """The fields' types as objects (the annotations are strings here)."""
    import typing

    return typing.get_type_hints(cls)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise InputError(
            f"{where}: expected a mapping (key: value lines), got {type(data).__name__} {data!r}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown config key {where}.{key}{hint}; known: {sorted(fields)}")
        ftype = fields[key].type
        sub = _hints(cls).get(key)
        if dataclasses.is_dataclass(sub):
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, str(ftype), f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigValueError as e:
        raise e.under(where) from None


def _coerce(value, ftype: str, where: str):
    """A YAML value as the field's type, strictly: a bool is ``true``/``false``, an int a whole
    number, a float a number (YAML 1.1 reads ``1e-3`` as a string: converted), a tuple a list.
    Ranges are the dataclasses' own checks."""
    base = ftype.replace(" | None", "")
    if value is None:
        if "None" in ftype:
            return None
        raise InputError(f"{where}: null is not allowed; give a {base}")
    if base.startswith("tuple["):
        if not isinstance(value, list | tuple):
            raise InputError(f"{where}: {value!r} is not a list; write it as [a, b]")
        inner = base[len("tuple[") : -1].split(",")[0].strip()
        return tuple(_coerce(v, inner, where) for v in value)
    bad = InputError(f"{where}: {value!r} is not {_TYPE_WORDS.get(base, 'a ' + base)}")
    if base == "bool":
        if not isinstance(value, bool):
            raise bad
    elif base in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value) if base == "float" else int(value)
            except ValueError:
                raise bad from None
        if base == "int" and isinstance(value, float):
            raise bad
        return float(value) if base == "float" else value
    elif base == "str" and not isinstance(value, str):
        raise bad
    return value


_TYPE_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def _set_dotted(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise InputError(f"override {dotted!r} is not KEY=VALUE (e.g. optim.lr=1e-3)")
    key, raw = dotted.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InputError(f"override {dotted!r}: the value is not valid YAML") from None
    node = data
    parts = key.strip().split(".")
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InputError(f"override {dotted!r}: {'.'.join(parts[: i + 1])} is not a section")
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


def config_class(model: str) -> tuple[type, dict]:
    """The config class of a built-in ``model`` and the defaults laid under a file and its
    overrides (other families name their class: :func:`read_config`)."""
    if model == "hierloc":
        return TrainConfig, {}
    if model == "geosurge":
        return GeoSurgeTrainConfig, GEOSURGE_DEFAULTS
    if model in BASELINES:
        return BaselineTrainConfig, {}
    raise InputError(f"unknown model {model!r}; one of hierloc, geosurge, {', '.join(BASELINES)}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, model: str = "hierloc"
):
    """``TrainConfig`` (``model="hierloc"``), ``GeoSurgeTrainConfig`` (``"geosurge"``, with
    the paper's defaults under the file and the overrides) or ``BaselineTrainConfig`` (a
    baseline; its overrides may leave out the ``baseline.`` section: ``epochs=10``)."""
    cls, defaults = config_class(model)
    bare = "baseline" if cls is BaselineTrainConfig else None
    return read_config(cls, path, overrides, defaults, bare)


def read_config(
    cls,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults: dict | None = None,
    bare: str | None = None,
):
    """Config dataclass ``cls`` (its fields the YAML's sections) from a YAML file and dotted
    overrides over ``defaults``; ``bare``: the section an override without a dot belongs to.
    Unknown keys, wrong types and out-of-range values are one line naming the key."""
    data: dict = {}
    sections = ", ".join(f"{f.name}:" for f in dataclasses.fields(cls))
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"{path}: cannot read the config ({' '.join(str(e).split())})") from e
        if not isinstance(data, dict):
            raise InputError(
                f"{path}: the top level must be a mapping of sections ({sections}), got a "
                f"{type(data).__name__}"
            )
        for section, body in data.items():
            if not isinstance(body, dict):
                raise InputError(
                    f"{path}: section {section!r} must be a mapping of keys, got "
                    f"{type(body).__name__} {body!r}"
                )
    for o in overrides or []:
        if bare is not None and "." not in o.partition("=")[0]:
            o = f"{bare}.{o.strip()}"
        _set_dotted(data, o)
    try:
        return _build(cls, _merge(defaults or {}, data), "config")
    except InputError as e:
        raise InputError(f"{path}: {e}" if path is not None else str(e)) from None


def save_config(cfg, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=True))
