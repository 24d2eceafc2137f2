"""The predictions document: what ``hierloc predict --format json`` writes and what
``POST /v1/locate`` answers — one versioned JSON document, described by :func:`schema`.

::

    {"format": "hierloc-predictions", "version": 1, "model": "…", "top_k": 5, "beam": 10,
     "results": [{"id", "file", "index", "exif_gps", "answers": [{"rank", "latitude",
                  "longitude", "score", "confidence", "error_km"?, "places": [{"level", "id",
                  "name", "latitude", "longitude", "confidence"}, …]}, …]}, …],
     "rejected": [{"id", "file", "index", "reason"}, …]}

``file`` is the input as given (the path on the command line, the file name as uploaded) and
``index`` its position among the inputs (from 0); ``error_km`` appears when the photo carries
an EXIF GPS position. A place's ``confidence`` is that level's; an answer's is its finest
level's (``null`` where a family has none).
"""

from __future__ import annotations

import io

from hierloc.geo.haversine import haversine_km
from hierloc.locate.types import Prediction, Rejected

FORMAT = "hierloc-predictions"
VERSION = 1


def photo_gps(data: bytes) -> tuple[float, float] | None:
    """A photo's EXIF GPS position, or None (no GPS, or GPS that cannot be read)."""
    from PIL import Image

    from hierloc.data.decode import gps_from_exif

    try:
        with Image.open(io.BytesIO(data)) as img:
            return gps_from_exif(img.getexif())
    except Exception:  # noqa: BLE001 (no or malformed GPS: the photo is answered without it)
        return None


def result_json(p: Prediction, source: dict, gps: tuple[float, float] | None) -> dict:
    """One photo's entry of ``results``; ``source`` is ``{"file": …, "index": …}``."""
    answers = []
    for rank, a in enumerate(p.answers, 1):
        item = {
            "rank": rank,
            "latitude": a.latitude,
            "longitude": a.longitude,
            "score": a.score,
            "confidence": a.confidence,
            "places": [
                {
                    "level": pl.level,
                    "id": pl.entity_id,
                    "name": pl.name,
                    "latitude": pl.latitude,
                    "longitude": pl.longitude,
                    "confidence": a.level_confidence.get(pl.level),
                }
                for pl in a.places
            ],
        }
        if gps is not None:
            item["error_km"] = float(haversine_km(gps[0], gps[1], a.latitude, a.longitude))
        answers.append(item)
    exif = None if gps is None else {"latitude": gps[0], "longitude": gps[1]}
    return {"id": p.id, **source, "answers": answers, "exif_gps": exif}


def rejected_json(r: Rejected, source: dict) -> dict:
    return {"id": r.id, **source, "reason": r.reason}


def document(model: str, top_k: int, beam: int, results: list[dict], rejected: list[dict]):
    """The whole document from :func:`result_json` and :func:`rejected_json` entries."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "top_k": top_k,
        "beam": beam,
        "results": results,
        "rejected": rejected,
    }


def _object(required: list[str] | None = None, **properties) -> dict:
    out = {"type": "object", "properties": properties}
    return out | ({"required": required} if required else {})


def schema() -> dict:
    """The document's JSON schema (also ``POST /v1/locate``'s 200 response in OpenAPI)."""
    num, text, maybe = {"type": "number"}, {"type": "string"}, {"type": ["number", "null"]}
    integer = {"type": "integer"}
    source = {
        "file": {"type": "string", "description": "the input as given (path or file name)"},
        "index": {"type": "integer", "minimum": 0, "description": "its position, from 0"},
    }
    place = _object(
        ["level", "id", "name", "latitude", "longitude", "confidence"],
        level=text,
        id=text,
        name=text,
        latitude=num,
        longitude=num,
        confidence=maybe,
    )
    answer = _object(
        ["rank", "latitude", "longitude", "score", "confidence", "places"],
        rank=integer,
        latitude=num,
        longitude=num,
        score=num,
        confidence=maybe,
        places={"type": "array", "items": place},
        error_km=num,
    )
    gps = _object(["latitude", "longitude"], latitude=num, longitude=num)
    result = _object(
        ["id", "file", "index", "answers", "exif_gps"],
        id=text,
        **source,
        answers={"type": "array", "items": answer},
        exif_gps={"anyOf": [gps, {"type": "null"}]},
    )
    rejected = _object(["id", "file", "index", "reason"], id=text, **source, reason=text)
    return _object(
        ["format", "version", "model", "top_k", "beam", "results", "rejected"],
        format={"type": "string", "enum": [FORMAT]},
        version={"type": "integer", "enum": [VERSION]},
        model=text,
        top_k=integer,
        beam=integer,
        results={"type": "array", "items": result},
        rejected={"type": "array", "items": rejected},
    )
