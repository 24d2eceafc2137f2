"""Value checks for config dataclasses (``__post_init__``): each failure names the field, the
value and what is allowed; the config loader adds the section (``optim.lr``)."""

from __future__ import annotations

import difflib
import math

from hierloc.errors import InputError


class ConfigValueError(InputError):
    """A config value outside what its field allows; ``key`` is the field's name."""

    def __init__(self, key: str, value, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")

    def under(self, where: str) -> ConfigValueError:
        """The same error with the field's section in front of its name."""
        return ConfigValueError(f"{where}.{self.key}", self.value, self.allowed)


def number(
    key: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite number within the bounds (open bounds exclude the end)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '≤'} {high:g}"
        raise ConfigValueError(
            key, value, "a finite number " + " and ".join(p for p in (lo, hi) if p)
        )


def integer(key: str, value, low: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise ConfigValueError(key, value, "an integer" + ("" if low is None else f" ≥ {low}"))


def one_of(key: str, value, allowed) -> None:
    allowed = list(allowed)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigValueError(key, value, f"one of {allowed}{hint}")


def flag(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigValueError(key, value, "true or false")
