"""The model registry: ``register_model(name)`` (a decorator on a factory) and
``create_model(name, …)``; unknown names raise with the close matches. A leaf of ``models/``:
model modules import it, it imports none of them (``hierloc.models`` fills it)."""

from __future__ import annotations

import difflib
from collections.abc import Callable

_MODELS: dict[str, Callable] = {}


def register_model(name: str):
    def deco(factory):
        _MODELS[name] = factory
        return factory

    return deco


def available_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, *args, **kwargs):
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_MODELS)}.{hint}")
    return _MODELS[name](*args, **kwargs)
