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


def assert_every_parameter_learns(module, *inputs) -> None:
    """One float64 backward pass of ``sum(module(*inputs)²)``: every element of every
    parameter's gradient must be far above rounding. A parameter the loss cannot reach (a key
    bias, which the softmax cancels, had ~1e-16) gets only rounding noise, which Adam turns
    into full-size random steps."""
    module.double()
    module(*(x.double() for x in inputs)).pow(2).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad.abs().min().item() > 1e-9, name


def document_rows(doc: dict) -> list[dict]:
    """The predictions document's answers flattened, one row per answer: ``id, file, rank,
    latitude, longitude, score, confidence`` and per level the name, ``{level}_id`` and
    ``{level}_confidence`` (``hierloc predict --format csv``'s columns, plus ``file``)."""
    rows = []
    for r in doc["results"]:
        for a in r["answers"]:
            row = {"id": r["id"], "file": r["file"]}
            row |= {k: a[k] for k in ("rank", "latitude", "longitude", "score", "confidence")}
            for pl in a["places"]:
                row[pl["level"]] = pl["name"]
                row[f"{pl['level']}_id"] = pl["id"]
                row[f"{pl['level']}_confidence"] = pl["confidence"]
            rows.append(row)
    return rows
