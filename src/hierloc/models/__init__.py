"""Models: ``nn.Module``s that compute embeddings — never losses, metrics or files — behind a
registry: ``create_model(name, config, …)`` (HierLoc, GeoSURGE; the baselines' MLPs are built
by :mod:`hierloc.locate.baselines`). Importing the package registers the built-in models."""

from hierloc.models import geosurge as _geosurge  # noqa: F401 (registers itself)
from hierloc.models import hierloc as _hierloc  # noqa: F401 (registers itself)
from hierloc.models.registry import available_models, create_model, register_model

__all__ = ["available_models", "create_model", "register_model"]
