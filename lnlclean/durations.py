"""Durations as people write and read them: ``90s``, ``10m``, ``1h30m`` in, "3 min 12 s" out."""

from __future__ import annotations

import math
import re

from .errors import UserError

UNITS = {"s": 1, "m": 60, "h": 3600}
PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str, option: str) -> float:
    """Returns the seconds in `text` (``90s``, ``10m``, ``1h``, ``1h30m``, or a bare number of seconds).

    Raises UserError naming `option` for anything else, or for a duration of zero.
    """
    compact = text.strip().lower().replace(" ", "")
    try:
        seconds = float(compact)
    except ValueError:
        parts = PART.findall(compact)
        if not parts or "".join(number + unit for number, unit in parts) != compact:
            raise UserError(f"{option} {text!r}: expected a duration such as 90s, 10m or 1h30m") from None
        seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"{option} {text!r}: must be longer than zero")
    return seconds


def format_duration(seconds: float | None) -> str:
    """Returns `seconds` as e.g. "41 s", "3 min 12 s" or "2 h 05 min" ("–" when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
