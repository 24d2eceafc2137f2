"""Process-wide setup that training entry points do once, before a trainer is built: seed
every RNG, tune glibc's allocator, join the torchrun process group. The trainer itself takes
``rank`` and ``world`` as arguments and touches no process-wide state."""

from __future__ import annotations

import ctypes
import ctypes.util
import random
import sys

import numpy as np
import torch
import torch.distributed as dist

from hierloc.data.extract import dist_info


def tune_allocator() -> None:
    """Keep glibc from returning freed buffers to the OS after every tile: with its default
    (dynamic) mmap/trim thresholds, each multi-MB temporary of the loss's tiles is page-faulted
    in anew, which tripled the loss's time here. Linux/glibc only; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: the largest glibc allows
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, …): nothing to tune
        pass


def seed_everything(seed: int) -> None:
    """torch, NumPy and Python's RNGs (model initialisation and dropout draw from torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def join_process_group(device: str | torch.device = "cpu") -> tuple[int, int]:
    """``(rank, world)`` of this process: torchrun's ``RANK``/``WORLD_SIZE`` (``(0, 1)`` when
    run alone); joins the process group (NCCL on CUDA, Gloo on the CPU) when ``world > 1``."""
    rank, world = dist_info()
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return rank, world


def leave_process_group(rank: int, world: int) -> None:
    """The end of a data-parallel run (``world > 1``): every process waits for the others,
    leaves the group, and the non-zero ranks exit at once (status 0, output flushed) — letting
    them run the interpreter's shutdown let native worker threads (Gloo's, the thread pools')
    be destroyed while joinable, which aborts the process after its work is done."""
    if world <= 1:
        return
    import os
    import sys

    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def start_trainer(trainer_cls, cfg, data, run_dir, device: str = "cpu"):
    """The process setup above, then ``trainer_cls(cfg, data, run_dir, device, rank, world)``."""
    tune_allocator()
    seed_everything(cfg.run.seed)
    rank, world = join_process_group(device)
    return trainer_cls(cfg, data, run_dir, device=device, rank=rank, world=world)
