"""Small helpers several test modules share."""

from __future__ import annotations

import os
import sys


def set_options(overrides) -> list[str]:
    """``--set KEY=VALUE`` for each override, as the command line takes them."""
    return [arg for s in overrides for arg in ("--set", s)]


def torchrun(*args: str, sets=(), procs: int = 2) -> list[str]:
    """The command line ``torchrun --standalone --nproc_per_node PROCS -m hierloc ARGS…``
    followed by ``--set`` for each of ``sets``."""
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    head = [exe, "--standalone", "--nproc_per_node", str(procs), "-m", "hierloc"]
    return [*head, *args, *set_options(sets)]
