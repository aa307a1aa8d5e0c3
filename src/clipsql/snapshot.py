"""The search snapshot: exact search over an in-memory copy of one model's searchable vectors.

An exact top-k over the tables on chdb costs ~16 ms at 25,000 x 512 vectors, most of it the
MergeTree read of the 51 MB vector column (~6-8 ms, a copy out of the page cache that no read
setting avoids), FINAL and the joins behind photo_search (bench/search_breakdown.py). The
same scan over a Memory-engine table reads nothing: ~5 ms. So a store keeps, per session, a
temporary Memory table `search_snapshot` holding the model's rows of photo_search (the
searchable photos, with photo_search's column names, so the filter conditions of
:data:`clipsql.search.filters.FILTERS` run on it unchanged) and each vector's norm
(sql/<dialect>/session/build_search_snapshot.sql), and text, image, combined, crop and
nearest search read it, and no other table, through queries/search_photos_snapshot.sql, which
returns exactly what search_photos returns (tests/test_search_parity.py).

It is never stale: before each search :func:`use_snapshot` reads the active parts of the
tables behind photo_search, photo_embeddings, photos, keywords and colors
(sql/clickhouse/session/search_snapshot_state.sql, ~1.5 ms); any insert, merge, mutation,
TRUNCATE or DROP changes that list, and the snapshot is then rebuilt before the search runs
(bench/search_latency.py measures the rebuild).

Where it is used: chdb stores (the default; one process per data path, so the copy lives in
the process that searches), up to :attr:`clipsql.db.Store.search_snapshot_max_bytes` of
vectors (default :data:`clipsql.db.SEARCH_SNAPSHOT_MAX_BYTES`; larger stores search the tables directly, or
through the HNSW index with rerank="exact"). ClickHouse server stores can opt in by setting
that attribute (each session then holds its own copy on the server); DuckDB stores do not
use it (DuckDB has no cheap way to tell that a table changed).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from .db import Store
from .resources import sql_dir

log = logging.getLogger(__name__)

#: The query that runs instead of each searchable query when the snapshot is current.
SNAPSHOT_QUERIES = {"search_photos": "search_photos_snapshot"}


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """What a store's snapshot was made from (the model, the parts list it read) and whether
    it is usable (False: over the size limit, or the build failed; retried once the tables
    change)."""

    model: str
    parts: tuple
    usable: bool = True


@functools.lru_cache(maxsize=1)
def _state_sql() -> str:
    return (sql_dir() / "clickhouse" / "session" / "search_snapshot_state.sql").read_text(encoding="utf-8")


def _state(db: Store) -> tuple[tuple, int]:
    """(the active parts of the tables the snapshot copies, photo_embeddings' uncompressed bytes)."""
    rows = db.query_rows(_state_sql())
    parts = tuple((table, name) for table, name, _ in rows)
    vector_bytes = sum(int(size) for table, _, size in rows if table == "photo_embeddings")
    return parts, vector_bytes


def use_snapshot(db: Store, model: str) -> bool:
    """Make `db`'s search snapshot hold the current searchable vectors of `model`.

    Returns:
        True when the snapshot queries (:data:`SNAPSHOT_QUERIES`) can run now, the snapshot
        built or rebuilt if a table it copies changed since it was; False when the store
        does not use one (DuckDB, a server that did not opt in, more than
        `db.search_snapshot_max_bytes` of vectors, or a build that failed, which is logged):
        the searchable queries then read the tables.
    """
    if not db.capabilities.session_snapshot or db.search_snapshot_max_bytes <= 0:
        return False
    parts, vector_bytes = _state(db)
    built = db.search_snapshot
    if built is not None and (built.model, built.parts) == (model, parts):
        return built.usable
    if vector_bytes > db.search_snapshot_max_bytes:
        log.info(
            "search snapshot off: %d bytes of vectors is over search_snapshot_max_bytes = %d; searching the tables",
            vector_bytes,
            db.search_snapshot_max_bytes,
        )
        discard(db)  # frees an older, smaller copy
        db.record_search_snapshot(_Snapshot(model, parts, usable=False))
        return False
    try:  # the script drops the old copy first
        db.run_script("build_search_snapshot", {"model": model}, folder="session")
    except Exception as exc:  # e.g. the engine's memory limit: search still works without it
        log.warning(
            "could not build the search snapshot (%s); searching the tables", str(exc).strip().splitlines()[0][:300]
        )
        db.record_search_snapshot(_Snapshot(model, parts, usable=False))
        return False
    # A write between the state query and the build would leave the parts list older than
    # the copy, which only costs one more rebuild.
    db.record_search_snapshot(_Snapshot(model, parts))
    log.debug("search snapshot built for model %r from %d parts", model, len(parts))
    return True


def discard(db: Store) -> None:
    """Drop `db`'s search snapshot (its memory is freed; the next search rebuilds it)."""
    built = db.search_snapshot
    if built is not None and built.usable:
        db.command("DROP TEMPORARY TABLE IF EXISTS search_snapshot", changes_data=False)
    db.record_search_snapshot(None)
