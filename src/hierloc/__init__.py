"""hierloc: worldwide visual geolocation with hierarchical hyperbolic entity embeddings.

Implements HierLoc (entity hierarchy in Lorentz space, GWH-InfoNCE, beam search) and
GeoSURGE (S2-geocell hierarchy with semantic fusion). See the README for the command line.
"""

from importlib.metadata import PackageNotFoundError, version

from hierloc.errors import HierlocError, InputError

try:
    __version__ = version("hierloc")  # the installed distribution's metadata
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["HierlocError", "InputError", "__version__"]
