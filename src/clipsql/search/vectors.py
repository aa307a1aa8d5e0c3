"""Query vectors: the checks a vector passes before any SQL runs, and the stored vectors of
indexed photos (the query of :func:`clipsql.search.similar` and the candidates of MMR)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..constants import MAX_WIDTH
from ..db import Store
from ..errors import BadArgument, NotFound
from ..queries import get_query
from .checks import check_text


def check_query_vector(vector, dim: int | None = None, *, model: str | None = None) -> list[float]:
    """Validate a query vector: (dim,) finite numbers (any width 1..65535 when `dim` is None,
    before the model is known), non-zero, with a finite positive norm in float32. Returns it
    as a float list.

    Args:
        model: the label whose width `dim` is, named in the error.

    Raises:
        BadArgument: wrong shape or width, NaN or infinite values, a zero vector, or a
            norm that overflows (e.g. 512 values of 1e38) or underflows to 0 in float32.
    """
    wanted = "numbers" if dim is None else f"{dim} numbers"
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadArgument(f"query vector must be a sequence of {wanted}: {exc}") from None
    if array.ndim != 1 or not 1 <= array.shape[0] <= MAX_WIDTH:
        raise BadArgument(f"query vector must be a sequence of {wanted} (a 1-d array), got shape {array.shape}")
    if dim is not None and array.shape[0] != dim:
        whose = f"model {model!r} stores" if model is not None else "the store holds"
        raise BadArgument(f"query vector has {array.shape[0]} values, but {whose} {dim}-dim vectors")
    if not np.all(np.isfinite(array)):
        raise BadArgument("query vector holds NaN or infinite values")
    if not np.any(array):
        raise BadArgument("query vector is all zeros: it has no direction to search")
    with np.errstate(over="ignore", under="ignore"):
        norm = np.linalg.norm(array)  # in float32, as the engines compute cosine distances
    if not (np.isfinite(norm) and norm > 0):
        raise BadArgument(
            f"query vector has a norm that is not finite and positive in float32 ({float(norm)!r}): "
            f"its values are too large (or too small) to search with; normalize it first"
        )
    return array.tolist()


def photo_vectors(db: Store, photo_ids: Sequence[str], *, model: str) -> dict[str, np.ndarray]:
    """The stored vectors of `photo_ids` for `model`: {photo_id: (d,) float32}; absent ids left out."""
    frame = get_query("photo_vectors").run(db, model=model, photo_ids=[str(p) for p in photo_ids])
    return {pid: np.asarray(vec, dtype=np.float32) for pid, vec in zip(frame["photo_id"], frame["embedding"])}


def photo_vector(db: Store, photo_id: str, model: str) -> np.ndarray:
    """The stored vector of one indexed photo for `model`: (d,) float32.

    Raises:
        BadArgument: an empty or unusable photo_id.
        NotFound: the photo has no vector for `model` (no such photo, or not embedded yet).
    """
    check_text("photo_id", photo_id, allow_empty=False)
    found = photo_vectors(db, [photo_id], model=model)
    if photo_id not in found:
        raise NotFound(
            f"photo_id {photo_id!r} has no vector for model {model!r} in {db.description} "
            f"(no such photo, or not embedded yet)"
        )
    return found[photo_id]
