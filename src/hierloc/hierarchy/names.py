"""Entity-name sanitisation and stable entity ids (HierLoc Algorithm 1).

``sanitize(name)`` turns a place name into a canonical token:

1. Unicode NFKC (full-width forms, ligatures and compatibility characters folded).
2. Accents are removed from Latin letters only (``São Paulo`` → ``sao paulo``); marks in other
   scripts are kept, since they are part of the letter (Devanagari vowel signs, Thai tones).
3. Case-folded (``STRASSE``/``Straße`` → ``strasse``).
4. Apostrophes of every kind (``' ’ ‘ ʼ ` ´``) are dropped: ``L'Aquila`` → ``laquila``,
   ``Côte d’Ivoire`` → ``cote-divoire``.
5. Any other run of characters that are not letters, digits or combining marks (spaces,
   hyphens, underscores, dots, commas, slashes, brackets) becomes one ``-``; leading and
   trailing ``-`` are stripped.

Letters and digits of every script are kept (``東京都`` stays ``東京都``). A name that
sanitises to nothing, or is missing (null, ``""``, ``"nan"``, ``"NaN"``), is *missing*.

Entity ids are the ISO2 country code followed by the tokens of the path, joined by ``/``:
``FR``, ``FR/ile-de-france``, ``FR/ile-de-france/paris``, ``FR/ile-de-france/paris/paris``.
A missing level uses the placeholder token ``_`` (which sanitisation never produces), so every
record has four levels and the tree stays a tree: ``SG/_/_/singapore``. A placeholder entity
is named after its parent (its text embedding then describes the right place).
"""

from __future__ import annotations

import re
import unicodedata

PLACEHOLDER = "_"
SEPARATOR = "/"
APOSTROPHES = "'’‘ʼ`´ʹʻ"
_APOS = re.compile(f"[{re.escape(APOSTROPHES)}]")
_DASHES = re.compile(r"-+")
_ASCII_APOS = re.compile(r"['`]")
_ASCII_SEP = re.compile(r"[^a-z0-9]+")
MISSING_NAMES = ("", "nan", "NaN", "None", "null")


def _strip_latin_accents(text: str) -> str:
    out = []
    base_is_latin = False
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch):
            if base_is_latin:
                continue
        else:
            base_is_latin = unicodedata.name(ch, "").startswith("LATIN")
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def sanitize(name: str | None) -> str | None:
    """Canonical token of a place name, or ``None`` if missing (see module doc)."""
    if name is None or not isinstance(name, str) or name.strip() in MISSING_NAMES:
        return None
    if name.isascii():  # the same rules, fast: no normalisation, accents or marks in ASCII
        text = _ASCII_SEP.sub("-", _ASCII_APOS.sub("", name.lower())).strip("-")
        return text or None
    text = unicodedata.normalize("NFKC", name)
    text = _strip_latin_accents(text)
    text = text.casefold()
    text = _APOS.sub("", text)
    # keep letters, digits and combining marks (part of the letter in many scripts)
    text = "".join(ch if ch.isalnum() or unicodedata.category(ch)[0] == "M" else "-" for ch in text)
    text = _DASHES.sub("-", text).strip("-")
    return text or None


def display_name(name: str | None) -> str | None:
    """Name as shown to people and text encoders: NFKC, whitespace collapsed, or ``None``."""
    if name is None or not isinstance(name, str) or name.strip() in MISSING_NAMES:
        return None
    return " ".join(unicodedata.normalize("NFKC", name).split()) or None


def entity_id(iso2: str, *tokens: str | None) -> str:
    """``ISO2/token/...`` with :data:`PLACEHOLDER` for missing tokens."""
    return SEPARATOR.join([iso2, *(t if t else PLACEHOLDER for t in tokens)])
