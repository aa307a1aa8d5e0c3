"""Re-ranked photo searches (``rerank="exact"`` and ``rerank="mmr"``): fetch more candidates
than the page needs, then re-score them exactly or pick a diverse page by maximal marginal
relevance (:func:`mmr_order`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ..db import Store
from .checks import MAX_K, MAX_OVERFETCH
from .filters import Filters
from .options import SearchOptions
from .sql import photo_frame, run_query, search_photos
from .vectors import photo_vectors

if TYPE_CHECKING:  # pandas loads with the first DataFrame made, not with this module
    import pandas as pd

log = logging.getLogger(__name__)


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: indices of `k` rows of `candidates` in pick order.

    Each step picks the candidate maximizing ``lam * sim(q, c) - (1 - lam) * max sim(c, picked)``
    (cosine similarities of L2-normalized vectors); ties go to the earlier (nearer) row.

    Args:
        query: (d,) float32. candidates: (n, d) float32, nearest first. k: rows wanted.
        lam: 1.0 = relevance only (the distance order), 0.0 = diversity only.
    """
    q = query / np.linalg.norm(query)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True).clip(1e-12)
    relevance = c @ q
    n = len(c)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(available, lam * relevance - (1 - lam) * penalty, -np.inf)
        best = int(np.argmax(score))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, c @ c[best])
    return picked


def reranked(
    db: Store,
    vector: list[float],
    model: str,
    options: SearchOptions,
    filters: Filters,
    *,
    similar_to: str | None = None,
) -> pd.DataFrame:
    """The page of `options` (whose rerank is "exact" or "mmr") of the photos nearest to
    `vector` ((d,) floats) for `model` that pass `filters`; `similar_to` (a photo_id) is
    left out of the results.

    "exact" without filters lets the HNSW index of the model's width (its table
    photo_embeddings_ann_<dim>) propose ``overfetch * (k + offset)`` candidates
    (queries/search_photos_ann.sql) and re-scores them exactly; with a filter set, on an
    engine without a vector index (DuckDB), or before a refresh has built the index of this
    width (a store upgraded from a 512-only one), the exact, pre-filtered search runs instead. "mmr" orders the
    ``overfetch * (k + offset)`` nearest photos by :func:`mmr_order`.

    Returns:
        DataFrame photo_id, distance, description, photo_url, photo_image_url; closest first
        ("exact") or in MMR pick order ("mmr").
    """
    # Re-ranked kinds work on the first k + offset (+1 for the photo itself when similar).
    extra = 1 if similar_to is not None else 0
    wanted = options.k + options.offset + extra
    frame = None
    ann_table = db.ann_table(len(vector)) if options.rerank == "exact" and not filters.active else None
    if ann_table is not None:
        try:
            frame = run_query(
                db,
                "search_photos_ann",
                ann_table=ann_table,
                query_vec=vector,
                model=model,
                k=min(wanted, MAX_K),
                offset=0,
                candidates=max(options.overfetch * wanted, wanted),
                max_distance=options.max_distance,
            )
        except Exception as exc:
            if not db.is_missing_table(exc):
                raise
            log.warning(
                "%s has no approximate index of width %d yet (`clipsql refresh` builds it): searching exactly",
                db.description,
                len(vector),
            )
    if frame is None:
        if options.rerank == "exact" and filters.active:
            log.info("a filter is set: running the exact (pre-filtered) search instead of the index")
        fetch = wanted if options.rerank == "exact" else max(options.overfetch * wanted, wanted)
        frame = search_photos(
            db, vector, model, filters, k=min(fetch, MAX_K * MAX_OVERFETCH), offset=0, max_distance=options.max_distance
        )
    if similar_to is not None:
        frame = frame[frame["photo_id"] != similar_to]
    if options.rerank == "mmr" and len(frame):
        vectors = photo_vectors(db, frame["photo_id"].tolist(), model=model)
        matrix = np.stack([vectors[p] for p in frame["photo_id"]])
        order = mmr_order(np.asarray(vector, np.float32), matrix, options.k + options.offset, options.mmr_lambda)
        frame = frame.iloc[order]
    return photo_frame(frame.iloc[options.offset : options.offset + options.k])
