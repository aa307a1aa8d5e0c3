"""Running the photo queries: the one place the search package runs the named queries of
queries/, with the metadata filters put in place of a query's ``-- @filters`` line
(:meth:`clipsql.queries.NamedQuery.with_filters`) and their values bound, and where the exact
search picks the store's snapshot when it has one; and shaping a result into the photo columns."""

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


def run_query(db: Store, name: str, filters: Filters | None = None, **values) -> pd.DataFrame:
    """The rows of the named query `name` with `values` bound as its parameters and, for a
    query that takes filters, the `filters` that are set (timed at debug level).

    Raises:
        BadArgument: a value the query does not take, or a missing one.
        QueryFileError: filters set for a query without a ``-- @filters`` line.
    """
    started = time.perf_counter()
    query = get_query(name)
    if filters is not None and filters.active:
        query = query.with_filters(filters.conditions())  # made once per combination of filters
        values.update(filters.params())
    frame = query.run(db, **values)
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


def search_photos(
    db: Store, vector: list[float], model: str, filters: Filters, *, k: int, offset: int, max_distance: float | None
) -> pd.DataFrame:
    """The exact search: rows offset..offset+k of the photos nearest to `vector` ((d,) floats)
    for `model` that pass `filters` and lie within `max_distance` (cosine, 0..2).

    Runs queries/search_photos.sql (over photo_search), or on a store with a search snapshot
    (:mod:`clipsql.snapshot`) its twin over the snapshot, with the same filter conditions.

    Returns:
        The query's rows (photo columns, closest first), not yet shaped by :func:`photo_frame`.
    """
    values = dict(query_vec=vector, model=model, k=k, offset=offset, max_distance=max_distance)
    if snapshot.use_snapshot(db, model):
        try:
            return run_query(db, snapshot.SNAPSHOT_QUERIES["search_photos"], filters, **values)
        except Exception as exc:
            if not db.is_missing_table(exc):
                raise
            # The session lost its temporary table (a server session timed out, a DROP by hand).
            log.warning("the search snapshot is gone from this session; searching the tables")
            snapshot.discard(db)
    return run_query(db, "search_photos", filters, **values)
