"""The small value checks every search module uses, and the limits they enforce.

Each check returns the value normalized (an int, a float, a date) or raises
:class:`~clipsql.errors.BadArgument` with a message naming the argument, so that a caller's
mistake is told before any SQL runs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np

from ..errors import BadArgument

#: Most rows one page of a search returns.
MAX_K = 10_000
#: Largest offset (rows skipped) of a page.
MAX_OFFSET = 1_000_000
#: Most candidates per wanted row for rerank="exact" and rerank="mmr".
MAX_OVERFETCH = 1_000
#: Longest text a string filter or query may hold (characters).
MAX_TEXT_CHARS = 100_000


def check_text(name: str, value, *, allow_empty: bool = True) -> str:
    """`value` if it is a string without NUL characters of at most :data:`MAX_TEXT_CHARS`
    characters (and, with allow_empty=False, not blank).

    Raises:
        BadArgument: not a string, a NUL character, too long, or blank when not allowed.
    """
    if not isinstance(value, str):
        raise BadArgument(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise BadArgument(f"{name} contains a NUL character")
    if len(value) > MAX_TEXT_CHARS:
        raise BadArgument(f"{name} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    if not allow_empty and not value.strip():
        raise BadArgument(f"{name} is empty")
    return value


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int when it is an integer (not a bool) within low..high, both inclusive.

    Raises:
        BadArgument: not an integer, a bool, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise BadArgument(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def check_float(name: str, value, low: float, high: float) -> float:
    """`value` as a float when it is a finite number (not a bool) within low..high, inclusive.

    Raises:
        BadArgument: not a number, a bool, NaN or infinite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadArgument(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise BadArgument(f"{name} must be a finite number from {low:g} to {high:g}, got {value!r}")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """`value` when it is one of `choices`.

    Raises:
        BadArgument: any other value (unhashable ones included).
    """
    if not isinstance(value, str) or value not in choices:
        raise BadArgument(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_k(k) -> int:
    """`k` (rows of a page, 1..:data:`MAX_K`) as an int.

    Raises:
        BadArgument: not an integer within 1..MAX_K.
    """
    return check_int("k", k, 1, MAX_K)


def check_date(name: str, value) -> dt.date:
    """A date from a date, a datetime (its date) or a 'YYYY-MM-DD' string.

    Raises:
        BadArgument: anything else, or a string that is not an ISO date.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise BadArgument(f"{name} must be a date (YYYY-MM-DD), got {value!r}")
