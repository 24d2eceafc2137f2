"""hierloc: worldwide visual geolocation with hierarchical hyperbolic entity embeddings.

Implements HierLoc (entity hierarchy in Lorentz space, GWH-InfoNCE, beam search) and
GeoSURGE (S2-geocell hierarchy with semantic fusion). See the README for the command line.
"""

from hierloc.errors import HierlocError, InputError

__version__ = "0.1.0"

__all__ = ["HierlocError", "InputError", "__version__"]
