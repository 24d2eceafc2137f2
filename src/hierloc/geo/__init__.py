"""Geography: the one haversine, offline reverse geocoding, S2 partitions, location encodings.

Imports nothing else of hierloc's (DESIGN.md: lower layers never import higher ones).
"""

from hierloc.geo.haversine import EARTH_RADIUS_KM, haversine_km

__all__ = ["EARTH_RADIUS_KM", "haversine_km"]
