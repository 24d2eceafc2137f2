"""Small helpers several test modules share."""

from __future__ import annotations

import os
import sys


def torchrun(*args: str, procs: int = 2) -> list[str]:
    """The command line ``torchrun --standalone --nproc_per_node PROCS -m hierloc ARGS…``."""
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [exe, "--standalone", "--nproc_per_node", str(procs), "-m", "hierloc", *args]
