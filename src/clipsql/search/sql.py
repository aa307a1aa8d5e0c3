"""Running the photo queries: the one place the search package runs the named queries of
queries/ for a query vector (the exact search, on the store's snapshot when it has one) and
shapes their result into the photo columns."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from .. import snapshot
from ..db import Store
from ..queries import get_query
from .filters import Filters

log = logging.getLogger(__name__)

#: Columns of a photo result.
PHOTO_COLUMNS = ["photo_id", "distance", "description", "photo_url", "photo_image_url"]


def run_query(db: Store, name: str, **values) -> pd.DataFrame:
    """The rows of the named query `name` with `values` bound as its parameters (timed at debug level)."""
    started = time.perf_counter()
    frame = get_query(name).run(db, **values)
    log.debug("query %s: %d rows in %.1f ms", name, len(frame), 1000 * (time.perf_counter() - started))
    return frame


def photo_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as a photo result: the :data:`PHOTO_COLUMNS` in order, a fresh 0.. index,
    float64 distances."""
    # Copies only what differs: a query's own result already has these columns, a fresh
    # index and float64 distances (the three copies made every time took search.nearest from
    # 8.2 to 10.7 ms p50 at 25k photos, cProfile of the bench store).
    if list(frame.columns) != PHOTO_COLUMNS:
        frame = frame[PHOTO_COLUMNS]
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        frame = frame.reset_index(drop=True)
    if frame["distance"].dtype != np.float64:
        frame = frame.assign(distance=frame["distance"].astype("float64"))
    return frame


def page_params(filters: Filters, k: int, offset: int, max_distance: float | None) -> dict:
    """The paging, distance and filter parameters shared by the photo queries."""
    return dict(k=k, offset=offset, max_distance=max_distance, **filters.params())


def search_photos(
    db: Store, vector: list[float], model: str, filters: Filters, *, k: int, offset: int, max_distance: float | None
) -> pd.DataFrame:
    """The exact search: rows offset..offset+k of the photos nearest to `vector` ((d,) floats)
    for `model` that pass `filters` and lie within `max_distance` (cosine, 0..2).

    Runs queries/search_photos.sql, or search_photos_unfiltered.sql when no filter is set; on
    a store with a search snapshot (:mod:`clipsql.snapshot`) their `_snapshot` twins.

    Returns:
        The query's rows (photo columns, closest first), not yet shaped by :func:`photo_frame`.
    """
    # search_photos_unfiltered is search_photos without the filter block (a test checks the
    # texts): the same rows when no filter is set, and ClickHouse plans it faster.
    if not filters.active:
        name, values = "search_photos_unfiltered", dict(k=k, offset=offset, max_distance=max_distance)
    else:
        name, values = "search_photos", page_params(filters, k, offset, max_distance)
    if snapshot.use_snapshot(db, model):
        try:
            return run_query(db, snapshot.SNAPSHOT_QUERIES[name], query_vec=vector, model=model, **values)
        except Exception as exc:
            if not db.is_missing_table(exc):
                raise
            # The session lost its temporary table (a server session timed out, a DROP by hand).
            log.warning("the search snapshot is gone from this session; searching the tables")
            snapshot.discard(db)
    return run_query(db, name, query_vec=vector, model=model, **values)
