"""Combined queries: the term grammar (``beach -people 2:sunset``) and the weighted,
re-normalized sum of the terms' and images' embeddings (:func:`combine_vectors`, which
clipsql.evaluate also builds its combined queries with)."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence

import numpy as np

from ..errors import BadArgument
from .checks import check_text

_WEIGHT_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.DOTALL)


def parse_terms(query: str) -> list[tuple[str, float]]:
    """Split a combined query into (text, weight) terms.

    Grammar: words separated by spaces; `-term` has weight -1; `W:term` has weight W (a
    positive number) and `-W:term` weight -W; quotes group words into one term
    (`-"city lights"`, `2:"golden hour"`). Consecutive plain words form one phrase:
    ``a dog on a beach -people 2:sunset`` -> [('a dog on a beach', 1), ('people', -1),
    ('sunset', 2)].

    Raises:
        BadArgument: unbalanced quotes, an empty term or a zero weight.
    """
    check_text("query", query)
    try:
        tokens = shlex.split(query)
    except ValueError as exc:
        raise BadArgument(f"cannot parse the query terms: {exc}") from None
    terms: list[tuple[str, float]] = []
    phrase: list[str] = []
    for token in tokens:
        sign, body = (-1.0, token[1:]) if token.startswith("-") and len(token) > 1 else (1.0, token)
        m = _WEIGHT_RE.match(body)
        if sign > 0 and not m:
            phrase.append(token)
            continue
        if phrase:
            terms.append((" ".join(phrase), 1.0))
            phrase = []
        weight = float(m.group(1)) if m else 1.0
        text = (m.group(2) if m else body).strip()
        if not text:
            raise BadArgument(f"term {token!r} has no text")
        if weight == 0:
            raise BadArgument(f"term {token!r} has weight 0")
        terms.append((text, sign * weight))
    if phrase:
        terms.append((" ".join(phrase), 1.0))
    return terms


def combine_vectors(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """sum(weight * vector), re-normalized to length 1: (d,) float32.

    Raises:
        BadArgument: no parts, or parts that cancel out (a zero sum).
    """
    if not parts:
        raise BadArgument("a combined query needs at least one text term or image")
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float64))
    for vector, weight in parts:
        total += weight * np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-6:
        raise BadArgument("the weighted terms cancel out: their sum has no direction to search")
    return (total / norm).astype(np.float32)
