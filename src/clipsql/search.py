"""Search: named queries from queries/ run with a query vector bound as a parameter.

Public entry points: :func:`text` (text -> photos) and :func:`nearest` (any query vector).
They return pandas DataFrames (photo_id, distance, description, photo_url,
photo_image_url), closest first; the CLI's `clipsql search` prints the same frames.
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
import pandas as pd

from .db import Store, open_store
from .embed import ClipEmbedder
from .errors import BadArgument, NotFound
from .queries import get_query

log = logging.getLogger(__name__)

MAX_K = 10_000


@functools.lru_cache(maxsize=4)
def _embedder(source: str, name: str, device: str) -> ClipEmbedder:
    # Loading a model costs seconds; a notebook or a UDF asking many queries pays it once.
    return ClipEmbedder(source, device=device, name=name)


def resolve_model(db: Store, model: str | None = None) -> tuple[str, str, int]:
    """(label, source, dim) of `model`, or of the newest model with stored vectors.

    Raises:
        NotFound: no such model in the store, or no model at all.
    """
    models = get_query("models").run(db, min_vectors=1)
    if models.empty:
        raise NotFound(f"{db.description} holds no vectors yet: run `clipsql refresh` first")
    if model is None:
        row = models.iloc[0]
    else:
        match = models[(models["model"] == model) | (models["model_source"] == model)]
        if match.empty:
            raise NotFound(f"model {model!r} has no vectors in {db.description}; "
                           f"stored: {', '.join(models['model'])}")
        row = match.iloc[0]
    return str(row["model"]), str(row["model_source"]), int(row["dim"])


def check_query_vector(vector, dim: int) -> list[float]:
    """Validate a query vector: (dim,) finite numbers, non-zero. Returns it as a float list.

    Raises:
        BadArgument: wrong shape or dimension, NaN or infinite values, or a zero vector.
    """
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dim:
        raise BadArgument(f"query vector must have shape ({dim},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise BadArgument("query vector holds NaN or infinite values")
    if not np.any(array):
        raise BadArgument("query vector is all zeros: it has no direction to search")
    return array.tolist()


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise BadArgument(f"k must be an integer from 1 to {MAX_K}, got {k!r}")


def nearest(db: Store, query_vec, *, model: str, k: int = 10) -> pd.DataFrame:
    """Top-k photos nearest to `query_vec` ((d,) float32, L2-normalized) for `model`."""
    _check_k(k)
    _, _, dim = resolve_model(db, model)
    return get_query("nearest_photos").run(db, query_vec=check_query_vector(query_vec, dim), model=model, k=int(k))


def text(query: str, k: int = 10, *, model: str | None = None, store: str | os.PathLike | None = None,
         clickhouse_url: str | None = None, duckdb: str | os.PathLike | None = None,
         device: str = "auto") -> pd.DataFrame:
    """Text -> photos: the top-k photos whose image embedding is nearest to `query`'s.

    Args:
        query: the text, e.g. "a dog on a beach" (CLIP reads its first 77 tokens).
        k: how many photos (1..10,000).
        model: stored model label or source; default the newest model with vectors.
        store / clickhouse_url / duckdb: the backend (see :func:`clipsql.db.open_store`).
        device: where the text model runs.

    Returns:
        DataFrame with columns photo_id, distance (cosine, 0..2), description, photo_url,
        photo_image_url; k rows at most, closest first.

    Raises:
        BadArgument: empty query or bad k. NotFound: no vectors or unknown model.
    """
    if not isinstance(query, str) or not query.strip():
        raise BadArgument("the query text is empty")
    _check_k(k)
    with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb) as db:
        label, source, _ = resolve_model(db, model)
        vector = _embedder(source, label, device).embed_texts([query])[0]
        return nearest(db, vector, model=label, k=k)
