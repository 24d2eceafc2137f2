"""Model registry: ``create_model(name, config, entities)``; unknown names raise with the close
matches. Models are ``nn.Module``s that compute embeddings — never metrics or files."""

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
    _load_builtin()
    return sorted(_MODELS)


def create_model(name: str, *args, **kwargs):
    _load_builtin()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_MODELS)}.{hint}")
    return _MODELS[name](*args, **kwargs)


def _load_builtin() -> None:
    from hierloc.models import geosurge as _geosurge  # noqa: F401 (registers itself)
    from hierloc.models import hierloc as _hierloc  # noqa: F401 (registers itself)
