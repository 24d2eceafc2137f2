"""``hierloc serve``: the HTTP API and the page over any model folders (see :mod:`.app`)."""

from hierloc.serve.app import Settings, create_app

__all__ = ["Settings", "create_app"]
