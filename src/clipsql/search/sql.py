"""Running the photo queries: the one place the search package runs the named queries of
queries/, with the metadata filters put in place of a query's ``-- @filters`` line
(:meth:`clipsql.queries.NamedQuery.with_filters`) and their values bound, and where the exact
search picks the store's snapshot when it has one; and shaping a result into the photo columns.

A photo search gives a pandas DataFrame (the Python API's result) or, asked with
``arrow=True``, a pyarrow Table of the same columns: the CLI prints from Arrow, so that a
cold `clipsql search text` never imports pandas (0.3-0.4 s of its 1.5 s budget, issue 15)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import snapshot
from ..db import Store
from ..queries import get_query
from .checks import MAX_K, MAX_OFFSET
from .filters import Filters
from .memory import InMemoryVectors

if TYPE_CHECKING:  # pandas loads with the first DataFrame made, not with this module
    import pandas as pd

log = logging.getLogger(__name__)

#: Filter sets whose passing rows a search snapshot keeps (the ones used last).
ALLOWED_SETS_KEPT = 8
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
    query = _filtered_query(name, filters, values)
    frame = query.run(db, **values)
    log.debug("query %s: %d rows in %.1f ms", name, len(frame), _ms(started))
    return frame


def run_query_arrow(db: Store, name: str, filters: Filters | None = None, **values) -> pa.Table:
    """:func:`run_query`'s rows as a pyarrow Table (no pandas loaded).

    Raises:
        As :func:`run_query`.
    """
    started = time.perf_counter()
    query = _filtered_query(name, filters, values)
    table = query.run_arrow(db, **values)
    log.debug("query %s: %d rows in %.1f ms", name, table.num_rows, _ms(started))
    return table


def _filtered_query(name: str, filters: Filters | None, values: dict):
    """The named query with `filters`' conditions in place, their parameters added to `values`."""
    query = get_query(name)
    if filters is not None and filters.active:
        query = query.with_filters(filters.conditions())  # made once per combination of filters
        values.update(filters.params())
    return query


def photo_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as a photo result: the :data:`PHOTO_COLUMNS` in order, a fresh 0.. index,
    float64 distances."""
    import pandas as pd

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


def photo_table(table: pa.Table) -> pa.Table:
    """`table` as a photo result in Arrow (:func:`photo_frame`'s counterpart): the
    :data:`PHOTO_COLUMNS` in order, float64 distances."""
    if table.column_names != PHOTO_COLUMNS:
        table = table.select(PHOTO_COLUMNS)
    if table.schema.field("distance").type != pa.float64():
        table = table.set_column(1, "distance", table.column("distance").cast(pa.float64()))
    return table


def search_photos(
    db: Store,
    vector: list[float],
    model: str,
    filters: Filters,
    *,
    k: int,
    offset: int,
    max_distance: float | None,
    arrow: bool = False,
) -> pd.DataFrame | pa.Table:
    """The exact search: rows offset..offset+k of the photos nearest to `vector` ((d,) floats)
    for `model` that pass `filters` and lie within `max_distance` (cosine, 0..2).

    Runs queries/search_photos.sql (over photo_search), or on a store with a search snapshot
    (:mod:`clipsql.snapshot`) scores the snapshot's copy of the vectors in this process, the
    rows a filter lets through given by the same filter conditions over the snapshot.

    Returns:
        The query's rows (photo columns, closest first), not yet shaped by :func:`photo_frame`
        (:func:`photo_table` with `arrow`, which gives a pyarrow Table, not a DataFrame).
    """
    values = dict(query_vec=vector, model=model, k=k, offset=offset, max_distance=max_distance)
    found = snapshot.use_snapshot(db, model) if k <= MAX_K and offset <= MAX_OFFSET else None
    if found is not None:
        try:
            return _search_snapshot(
                db, found, vector, model, filters, k=k, offset=offset, max_distance=max_distance, arrow=arrow
            )
        except Exception as exc:
            if not db.is_missing_table(exc):
                raise
            # The session lost its temporary table (a server session timed out, a DROP by hand).
            log.warning("the search snapshot is gone from this session; searching the tables")
            snapshot.discard(db)
    return (run_query_arrow if arrow else run_query)(db, "search_photos", filters, **values)


def _search_snapshot(
    db: Store,
    found,
    vector: list[float],
    model: str,
    filters: Filters,
    *,
    k: int,
    offset: int,
    max_distance: float | None,
    arrow: bool = False,
) -> pd.DataFrame | pa.Table:
    """:func:`search_photos` over the store's snapshot `found`: the photos passing `filters`
    from its Memory table (queries/snapshot_photo_ids.sql), their vectors scored in this
    process (:class:`InMemoryVectors`, copied on the snapshot's first search)."""
    copy = found.cache.get("vectors")
    if copy is None:
        started = time.perf_counter()
        table = db.query_arrow(db.translate(get_query("snapshot_vectors").executable_sql), {"model": model})
        copy = InMemoryVectors.from_arrow(table, dim=len(vector), model=model)
        # The shown columns in the copy's row order (photo_id, as bytes, as it sorts them), as
        # numpy arrays: a page is a few fancy-indexing takes, no Arrow -> pandas conversion.
        shown = table.select(PHOTO_COLUMNS[:1] + PHOTO_COLUMNS[2:])
        shown = shown.take(pc.sort_indices(shown, [("photo_id", "ascending")]))
        found.cache["shown"] = {name: shown.column(name).to_numpy(zero_copy_only=False) for name in shown.column_names}
        found.cache["vectors"] = copy
        log.info("search snapshot of %r: %d vectors copied in %.0f ms", model, len(copy), _ms(started))
    allowed = None
    if filters.active:
        # The rows a filter lets through, kept with the snapshot for the filter sets used last
        # (an analyst tries several texts with one filter): the same until the tables change.
        key = ("allowed", tuple(filters.items()))  # (name, value) of the filters set, in registry order
        allowed = found.cache.get(key)
        if allowed is None:
            passing = run_query_arrow(db, "snapshot_photo_ids", filters, model=model).column("photo_id")
            allowed = copy.rows_of(passing)
            keys = [k for k in found.cache if isinstance(k, tuple) and k[0] == "allowed"]
            for old in keys[: max(0, len(keys) + 1 - ALLOWED_SETS_KEPT)]:
                del found.cache[old]
            found.cache[key] = allowed
    hits = copy.search(vector, k, offset=offset, max_distance=max_distance, allowed=allowed)
    shown = found.cache["shown"]
    columns = {"photo_id": shown["photo_id"][hits.rows], "distance": hits.distances.astype(np.float64)}
    columns.update((name, shown[name][hits.rows]) for name in PHOTO_COLUMNS[2:])
    if arrow:
        return pa.table(columns)
    import pandas as pd

    return pd.DataFrame(columns)


def _ms(started: float) -> float:
    return 1000 * (time.perf_counter() - started)
