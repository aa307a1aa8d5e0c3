"""The search snapshot: exact search over an in-process copy of one model's searchable vectors.

An exact top-k over the tables on chdb costs ~16 ms at 25,000 x 512 vectors, most of it the
MergeTree read of the 51 MB vector column (~6-8 ms, a copy out of the page cache that no read
setting avoids), FINAL and the joins behind photo_search (bench/search_breakdown.py), where
numpy scores the same vectors in memory in ~3.5 ms. So a store keeps, per session:

- a temporary Memory table `search_snapshot` holding the model's rows of photo_search without
  the vectors (sql/<dialect>/session/build_search_snapshot.sql; photo_search's column names,
  so the filter conditions of :data:`clipsql.search.filters.FILTERS` run on it unchanged:
  queries/snapshot_photo_ids.sql gives the photos a filtered search may return);
- in the process, the vectors of those photos with the columns a result shows
  (queries/snapshot_vectors.sql), searched by :class:`clipsql.search.memory.InMemoryVectors`
  (:func:`clipsql.search.sql.search_photos` builds it on the first search and hangs it on this
  module's record, :attr:`_Snapshot.cache`).

It is never stale: before each search :func:`use_snapshot` asks the engine for a token of the
tables behind photo_search, photo_embeddings, photos, keywords and colors
(:meth:`clipsql.engines.base.Store.tables_state`: on chdb the names of their part directories,
~0.13 ms; elsewhere their active parts, sql/clickhouse/session/search_snapshot_state.sql,
~1.5 ms); any insert, merge, mutation, TRUNCATE or DROP, by anyone, changes it, and the
snapshot is then rebuilt before the search runs (bench/search_latency.py measures the rebuild).

Where it is used: chdb stores (the default; one process per data path, so the copy lives in
the process that searches), up to :attr:`clipsql.db.Store.search_snapshot_max_bytes` of
vectors (default :data:`clipsql.db.SEARCH_SNAPSHOT_MAX_BYTES`; larger stores search the
tables directly, or through the HNSW index with rerank="exact"). ClickHouse server stores can
opt in by setting that attribute; DuckDB stores do not use it (DuckDB has no cheap way to
tell that a table changed).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from .db import Store
from .resources import sql_dir

log = logging.getLogger(__name__)

#: The tables behind photo_search, which the snapshot copies.
SNAPSHOT_TABLES = ("photo_embeddings", "photos", "keywords", "colors")


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """What a store's snapshot was made from (the model, the tables' state token it read) and
    whether it is usable (False: over the size limit, or the build failed; retried once the
    tables change).

    Attributes:
        cache: what the search layer keeps with this snapshot (the in-process vectors), gone
            with it.
    """

    model: str
    state: tuple
    usable: bool = True
    cache: dict = dataclasses.field(default_factory=dict, compare=False)


@functools.lru_cache(maxsize=1)
def _state_sql() -> str:
    return (sql_dir() / "clickhouse" / "session" / "search_snapshot_state.sql").read_text(encoding="utf-8")


def _state(db: Store) -> tuple[tuple, int]:
    """(the active parts of the tables the snapshot copies, photo_embeddings' uncompressed bytes)."""
    rows = db.query_rows(_state_sql())
    parts = tuple((table, name) for table, name, _ in rows)
    vector_bytes = sum(int(size) for table, _, size in rows if table == "photo_embeddings")
    return parts, vector_bytes


def use_snapshot(db: Store, model: str) -> _Snapshot | None:
    """Make `db`'s search snapshot hold the current searchable photos of `model`.

    Returns:
        The snapshot's record when it can be searched now, built or rebuilt if a table it
        copies changed since it was (its :attr:`_Snapshot.cache` then starts empty); None when
        the store does not use one (DuckDB, a server that did not opt in, more than
        `db.search_snapshot_max_bytes` of vectors, or a build that failed, which is logged):
        the searches then read the tables.
    """
    if not db.capabilities.session_snapshot or db.search_snapshot_max_bytes <= 0:
        return None
    state = db.tables_state(SNAPSHOT_TABLES)
    vector_bytes = None
    if state is None:
        state, vector_bytes = _state(db)
    built = db.search_snapshot
    if built is not None and (built.model, built.state) == (model, state):
        return built if built.usable else None
    if vector_bytes is None:
        vector_bytes = _state(db)[1]
    if vector_bytes > db.search_snapshot_max_bytes:
        log.info(
            "search snapshot off: %d bytes of vectors is over search_snapshot_max_bytes = %d; searching the tables",
            vector_bytes,
            db.search_snapshot_max_bytes,
        )
        discard(db)  # frees an older, smaller copy
        db.record_search_snapshot(_Snapshot(model, state, usable=False))
        return None
    try:  # the script drops the old copy first
        db.run_script("build_search_snapshot", {"model": model}, folder="session")
    except Exception as exc:  # e.g. the engine's memory limit: search still works without it
        fail(db, model, state, exc)
        return None
    # A write between the state read and the build would leave the state older than the
    # copy, which only costs one more rebuild.
    record = _Snapshot(model, state)
    db.record_search_snapshot(record)
    log.debug("search snapshot built for model %r", model)
    return record


def fail(db: Store, model: str, state: tuple, exc: BaseException) -> None:
    """Record that the snapshot of `model` could not be built from `state` (logged; the
    searches read the tables until the tables change)."""
    log.warning(
        "could not build the search snapshot (%s); searching the tables", str(exc).strip().splitlines()[0][:300]
    )
    discard(db)
    db.record_search_snapshot(_Snapshot(model, state, usable=False))


def discard(db: Store) -> None:
    """Drop `db`'s search snapshot (its memory is freed; the next search rebuilds it)."""
    built = db.search_snapshot
    if built is not None and built.usable:
        db.command("DROP TEMPORARY TABLE IF EXISTS search_snapshot", changes_data=False)
    db.record_search_snapshot(None)
