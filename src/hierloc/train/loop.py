"""The HierLoc training loop as a generator (spaCy's ``train_while_improving`` shape): the CLI
consumes it for logging, checkpoints and progress; tests drive it directly.

* AdamW for Euclidean parameters, geoopt ``RiemannianAdam`` for the Lorentz anchors, which are
  re-projected onto the hyperboloid after every step (:func:`project_onto_manifold`), gradient
  clipping.
* Data order: a seeded permutation per epoch; the position within it is part of the state.
* Checkpoints: a folder ``ckpt-STEP`` with ``model.safetensors``, ``config.yaml`` and
  ``train_state.pt`` (optimizers, step, epoch, position, every RNG state), written to a temp
  name, fsynced and renamed; the last ``keep_last`` are kept, plus ``best`` (validation).
  Resuming restores all of it, so N steps straight equal N/2 + resume + N/2.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from hierloc.config import TrainConfig, save_config
from hierloc.data.artifacts import read_safetensors
from hierloc.data.writers import staged_folder
from hierloc.errors import InputError
from hierloc.train.data import TrainingData

log = logging.getLogger(__name__)


def _fsync_dir_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def lr_factor(
    schedule: str,
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    steps_per_epoch: int = 1,
    step_gamma: float = 0.5,
) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then ``constant``, ``cosine`` (to 0 at ``total_steps``) or ``step``
    (× ``step_gamma`` per epoch)."""
    if schedule not in ("constant", "cosine", "step"):
        raise ValueError(f"optim.schedule must be constant, cosine or step, got {schedule!r}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))
    if schedule == "step":
        return warm * step_gamma ** (step // steps_per_epoch)
    return warm


@torch.no_grad()
def project_onto_manifold(optimizer, manifold) -> None:
    """Put every parameter of ``optimizer`` back on the hyperboloid (``x0`` recomputed from the
    space part) after a RiemannianAdam step: geoopt 0.5.1 does not re-project, and float32
    retractions drift off the manifold over long runs."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.copy_(manifold.project(p))


class Trainer:
    """The generic loop of one training run: optimizers (AdamW, RiemannianAdam for manifold
    parameters), schedule, clipping, data order, bf16 autocast, validation cadence with
    best-checkpoint selection and early stopping, atomic checkpoints and exact resume. A model's
    trainer provides :meth:`_build_model`, :meth:`train_step`, :meth:`validate` and
    :meth:`val_score` (:class:`hierloc.train.hierloc.HierLocTrainer`,
    :class:`hierloc.train.geosurge.GeoSurgeTrainer`). ``rank``/``world``: this process's place
    among torchrun's (the entry point, :func:`hierloc.train.runtime.start_trainer`, seeds,
    tunes and joins the group)."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: TrainingData,
        run_dir: str | Path,
        device: str = "cpu",
        rank: int = 0,
        world: int = 1,
    ) -> None:
        import geoopt  # only Lorentz anchors need it; its import warns under torch.jit

        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.device = torch.device(device)
        self.rank, self.world = int(rank), int(world)
        if cfg.optim.batch_size % self.world:
            raise InputError(
                f"optim.batch_size {cfg.optim.batch_size} must be divisible by the "
                f"{self.world} processes"
            )
        self.model, self.loss_fn = self._build_model()
        self.model.to(self.device)
        self.loss_fn.to(self.device)
        self.bf16 = self._use_bf16()
        self.forward_model = self.model
        if self.world > 1:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(self.model)
        manifold = [p for p in self.model.parameters() if isinstance(p, geoopt.ManifoldParameter)]
        ids = {id(p) for p in manifold}
        named = [(n, p) for n, p in self.model.named_parameters() if id(p) not in ids]
        named += [(f"loss.{n}", p) for n, p in self.loss_fn.named_parameters()]
        # log-parameters of positive scalars (τ, λ, σ, α) are not decayed: decay would pull
        # them to 1 (log 0), a bias towards τ = 1 rather than a regulariser
        scalars = [p for n, p in named if n.rsplit(".", 1)[-1].startswith("log_")]
        weights = [p for n, p in named if not n.rsplit(".", 1)[-1].startswith("log_")]
        self.opt = torch.optim.AdamW(
            [
                {"params": weights, "weight_decay": cfg.optim.weight_decay},
                {"params": scalars, "weight_decay": 0.0},
            ],
            lr=cfg.optim.lr,
        )
        self.ropt = None
        if manifold:
            self.ropt = geoopt.optim.RiemannianAdam(
                manifold, lr=cfg.optim.riemannian_lr, stabilize=cfg.optim.stabilize
            )
        self.step = self.epoch = self.position = 0
        self._perm, self._perm_epoch = None, None  # this epoch's order of the training samples
        self.best = -1.0
        self.bad_evals = 0  # validations since the best (early stopping)
        n = len(data.train)
        self.steps_per_epoch = max(1, n // cfg.optim.batch_size)
        self.total_steps = cfg.optim.max_steps or cfg.optim.epochs * self.steps_per_epoch
        self.lr_factor(0)  # validates optim.schedule before any work

    # -- one step -----------------------------------------------------------------------
    # -- what a model's trainer provides ----------------------------------------------------
    def _build_model(self):
        """``(model, loss module)`` of the run (e.g. HierLoc and its GWH-InfoNCE)."""
        raise NotImplementedError

    def train_step(self) -> dict:
        """One optimizer step on this process's share of ``batch_size`` images; an info dict
        with ``step, epoch, loss, images``."""
        raise NotImplementedError

    def validate(self, split=None, batch: int | None = None) -> dict:
        """Validation metrics (``val_*``) on ``split`` (default: the run's validation split)."""
        raise NotImplementedError

    def val_score(self, info: dict) -> float:
        """What "best" and early stopping maximise."""
        raise NotImplementedError

    def _batch(self) -> torch.Tensor:
        bs = self.cfg.optim.batch_size
        n = len(self.data.train)
        if self.position + bs > n:
            self.epoch += 1
            self.position = 0
        if self._perm_epoch != self.epoch:  # one permutation per epoch,
            # a function of the seed and the epoch alone: a resumed run draws the same one
            g = torch.Generator().manual_seed(self.cfg.run.seed * 100_003 + self.epoch)
            self._perm, self._perm_epoch = torch.randperm(n, generator=g), self.epoch
        idx = self._perm[self.position : self.position + bs]
        self._global_batch = idx
        self.position += bs
        per = bs // self.world
        return idx[self.rank * per : (self.rank + 1) * per]  # this process's share

    def _use_bf16(self) -> bool:
        mode = self.cfg.run.precision
        if mode not in ("auto", "fp32", "bf16"):
            raise ValueError(f"run.precision must be auto, fp32 or bf16, got {mode!r}")
        if mode == "bf16" and self.device.type == "cpu":
            if not bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
                log.warning("this CPU has no native bf16 matmuls: run.precision=bf16 is slow")
        return mode == "bf16" or (mode == "auto" and self.device.type == "cuda")

    def _autocast(self):
        """bf16 for the MLPs and attention; the geometry and the loss disable autocast
        themselves and run in fp32."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _optimizer_step(self) -> None:
        """Average the loss module's gradients over processes (DDP did the model's), clip,
        set the scheduled learning rates, step, re-project the Lorentz anchors; ``step += 1``."""
        if self.world > 1:
            for p in self.loss_fn.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        opts = [o for o in (self.opt, self.ropt) if o is not None]
        params = [p for o in opts for group in o.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)  # anchors included
        factor = self.lr_factor(self.step)
        for opt, base in ((self.opt, self.cfg.optim.lr), (self.ropt, self.cfg.optim.riemannian_lr)):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = base * factor
        self.opt.step()
        if self.ropt is not None:
            self.ropt.step()
            project_onto_manifold(self.ropt, self.model.manifold)
        self.step += 1

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier of optimizer step ``step`` (0-based)."""
        o = self.cfg.optim
        return lr_factor(
            o.schedule,
            step,
            self.total_steps,
            warmup_steps=o.warmup_steps,
            steps_per_epoch=self.steps_per_epoch,
            step_gamma=o.step_gamma,
        )

    def _agree_to_stop(self, stop: bool) -> bool:
        """Rank 0's early-stopping decision, broadcast so that every process stops at the same
        step (a process that went on would wait in the next all-reduce for ever)."""
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    # -- the loop -----------------------------------------------------------------------
    def steps(self) -> Iterator[dict]:
        """Yield one info dict per step (with validation results when they were computed)."""
        run = self.cfg.run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_config(self.cfg, self.run_dir / "config.yaml")
        if run.patience and self.bad_evals >= run.patience:
            log.info("%s stopped early at step %d; nothing to resume", self.run_dir, self.step)
            return
        every = self.steps_per_epoch if run.val_every == "epoch" else run.val_every
        log_file = open(os.devnull if self.rank else self.run_dir / "metrics.jsonl", "a")  # noqa: SIM115
        try:
            while self.step < self.total_steps:
                info = self.train_step()
                last = self.step == self.total_steps
                validating = self.data.val is not None and (self.step % every == 0 or last)
                if self.rank != 0:
                    yield info
                    if validating and self._agree_to_stop(False):  # rank 0 decides
                        break
                    continue
                stop = False
                if validating:
                    info |= self.validate()
                    score = self.val_score(info)
                    if score > self.best:
                        self.best, self.bad_evals = score, 0
                        info["is_best"] = True
                        if run.keep_best:
                            self.save_checkpoint("best")
                    else:
                        self.bad_evals += 1
                        stop = run.patience > 0 and self.bad_evals >= run.patience
                        if stop:
                            info["early_stop"] = True
                            log.info(
                                "early stopping at step %d: %d validations without improvement",
                                self.step,
                                self.bad_evals,
                            )
                if validating and self.world > 1:
                    stop = self._agree_to_stop(stop)
                if self.step % run.checkpoint_every == 0 or last or stop:
                    self.save_checkpoint()
                log_file.write(json.dumps(info) + "\n")
                log_file.flush()
                yield info
                if stop:
                    break
        finally:
            log_file.close()

    # -- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self, tag: str | None = None) -> Path:
        name = tag or f"ckpt-{self.step:08d}"
        final = self.run_dir / name
        with staged_folder(final, overwrite=True, kinds=None) as tmp:
            state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
            state |= {
                f"loss.{k}": v.detach().contiguous().cpu()
                for k, v in self.loss_fn.state_dict().items()
            }
            save_file(state, str(tmp / "model.safetensors"))
            save_config(self.cfg, tmp / "config.yaml")
            torch.save(
                {
                    "step": self.step,
                    "epoch": self.epoch,
                    "position": self.position,
                    "best": self.best,
                    "bad_evals": self.bad_evals,
                    "opt": self.opt.state_dict(),
                    "ropt": None if self.ropt is None else self.ropt.state_dict(),
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "numpy": np.random.get_state(),
                        "python": random.getstate(),
                    },
                },
                tmp / "train_state.pt",
            )
            _fsync_dir_files(tmp)
        if tag is None:
            ckpts = sorted(self.run_dir.glob("ckpt-*"))
            for stale in ckpts[: -self.cfg.run.keep_last]:
                shutil.rmtree(stale, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted(self.run_dir.glob("ckpt-*"))
        return ckpts[-1] if ckpts else None

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        fix = f"delete {path} to resume from the previous checkpoint"
        state = read_safetensors(path / "model.safetensors", "checkpoint's weights", fix)
        loss_state = {k[5:]: v for k, v in state.items() if k.startswith("loss.")}
        model_state = {k: v for k, v in state.items() if not k.startswith("loss.")}
        try:
            self.model.load_state_dict(model_state)
            self.loss_fn.load_state_dict(loss_state)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise InputError(
                f"{path}: does not fit this run's model ({first}); train into a "
                "new --output or restore the run's config"
            ) from e
        ts = torch.load(path / "train_state.pt", weights_only=False)
        self.step, self.epoch, self.position, self.best = (
            ts["step"],
            ts["epoch"],
            ts["position"],
            ts["best"],
        )
        self.bad_evals = int(ts.get("bad_evals", 0))
        self.opt.load_state_dict(ts["opt"])
        if self.ropt is not None and ts["ropt"] is not None:
            self.ropt.load_state_dict(ts["ropt"])
        torch.set_rng_state(ts["rng"]["torch"])
        np.random.set_state(ts["rng"]["numpy"])
        random.setstate(ts["rng"]["python"])
