"""Load stage: turn stage outputs into Arrow tables and upsert them, batched and columnar.

Public entry point: :class:`Loader`, bound to a store and a run `version` (the run's start
in ms since the epoch, the ReplacingMergeTree version column). Every write is an upsert on
the table's natural key, so a rerun doubles nothing. Embeddings are buffered and written
`flush_rows` at a time: few, large inserts (one ClickHouse part each), never row by row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .db import Store, vectors_array
from .download import DownloadResult
from .errors import BadArgument
from .sources import OPTIONAL_FILES, SourceData

log = logging.getLogger(__name__)

#: Embedding rows per insert: large enough for few parts, small enough that a killed run
#: loses little work (about 2 MB of vectors).
DEFAULT_FLUSH_ROWS = 1024


_TS = pa.timestamp("ms", tz="UTC")
#: Columns of etl_runs (sql/*/002_etl_runs.sql) as the run log writes them.
ETL_RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("started_at", _TS),
        ("ended_at", _TS),
        ("status", pa.string()),
        ("error", pa.string()),
        ("host", pa.string()),
        ("pid", pa.uint32()),
        ("model", pa.string()),
        ("model_source", pa.string()),
        ("source", pa.string()),
        ("source_version", pa.string()),
        ("photo_limit", pa.uint64()),
        ("source_ok", pa.uint64()),
        ("source_failed", pa.uint64()),
        ("source_s", pa.float64()),
        ("download_ok", pa.uint64()),
        ("download_failed", pa.uint64()),
        ("download_skipped", pa.uint64()),
        ("download_s", pa.float64()),
        ("embed_ok", pa.uint64()),
        ("embed_failed", pa.uint64()),
        ("embed_skipped", pa.uint64()),
        ("embed_s", pa.float64()),
        ("load_rows", pa.uint64()),
        ("load_s", pa.float64()),
        ("index_s", pa.float64()),
        ("deleted", pa.uint64()),
        ("purged", pa.uint64()),
        ("seconds", pa.float64()),
    ]
)


# vectors_array, the Arrow form of the `embedding` column of every vector table, lives in
# clipsql.db (clipsql.evaluate writes vectors too); `from clipsql.load import vectors_array`
# works as before.


def embeddings_table(
    photo_ids: Sequence[str], embeddings: np.ndarray, model: str, version: int, precision: str = "fp32"
) -> pa.Table:
    """Arrow rows of photo_embeddings from (n,) ids and (n, d) float32 vectors embedded at
    `precision` (clipsql.precision: fp32, bf16, fp16 or int8)."""
    n = len(embeddings)
    return pa.table(
        {
            "photo_id": pa.array(list(photo_ids), pa.string()),
            "model": pa.array([model] * n, pa.string()),
            "embedding": vectors_array(embeddings),
            "embed_precision": pa.array([precision] * n, pa.string()),
            "version": pa.array(np.full(n, version, dtype=np.uint64)),
        }
    )


@dataclasses.dataclass
class Loader:
    """Upserts of one run into `store`, all with the run's `version`.

    Attributes:
        rows_written: rows upserted so far, by table.
        seconds: time spent in inserts, seconds.
    """

    store: Store
    version: int
    flush_rows: int = DEFAULT_FLUSH_ROWS
    rows_written: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    _pending: list[tuple[list[str], np.ndarray, str, str]] = dataclasses.field(default_factory=list)

    def _upsert(self, table: str, data: pa.Table) -> None:
        started = time.perf_counter()
        self.store.upsert(table, data)
        self.seconds += time.perf_counter() - started
        self.rows_written[table] = self.rows_written.get(table, 0) + data.num_rows

    def photos(self, source: SourceData) -> None:
        """Upsert the photos table and the optional files present in the source."""
        self.photo_rows(source.photos, source.version)
        for name, table in source.extras.items():
            self.extra_rows(name, table)

    def photo_rows(self, photos: pa.Table, source_version: str) -> None:
        """Upsert photos rows (schema ``arrow_schema('photos')``), flagged not deleted."""
        n = photos.num_rows
        photos = photos.append_column("source_version", pa.array([source_version] * n, pa.string()))
        photos = photos.append_column("is_deleted", pa.array(np.zeros(n, dtype=np.uint8)))
        self._upsert("photos", self._versioned(photos))

    def extra_rows(self, name: str, table: pa.Table) -> None:
        """Upsert rows of an optional file ('keywords', 'collections', 'colors', 'conversions')."""
        if name not in OPTIONAL_FILES:
            raise BadArgument(f"{name!r} is not one of the optional files {', '.join(OPTIONAL_FILES)}")
        self._upsert(name, self._versioned(table))

    def download_results(self, results: Sequence[DownloadResult], previous_attempts: dict[str, int]) -> None:
        """Upsert one download_status row per result; attempts count real requests only."""
        if not results:
            return
        now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms", tz="UTC"))
        attempts = [previous_attempts.get(r.photo_id, 0) + (0 if r.cached else 1) for r in results]
        table = pa.table(
            {
                "photo_id": [r.photo_id for r in results],
                "url": [r.url for r in results],
                "status": [r.status for r in results],
                "reason": [r.reason for r in results],
                "detail": [r.detail for r in results],
                "http_status": pa.array([r.http_status for r in results], pa.uint16()),
                "bytes": pa.array([r.bytes for r in results], pa.uint64()),
                "width": pa.array([r.width for r in results], pa.uint32()),
                "height": pa.array([r.height for r in results], pa.uint32()),
                "permanent": pa.array([int(r.permanent) for r in results], pa.uint8()),
                "attempts": pa.array([max(a, 1) for a in attempts], pa.uint32()),
                "last_attempt_at": pa.array([now.value] * len(results), pa.timestamp("ms", tz="UTC")),
            }
        )
        self._upsert("download_status", self._versioned(table))

    def embeddings(self, photo_ids: Sequence[str], embeddings: np.ndarray, model: str, precision: str = "fp32") -> None:
        """Buffer vectors embedded at `precision`; written once `flush_rows` are pending (and
        by :meth:`flush`)."""
        if len(photo_ids):
            self._pending.append((list(photo_ids), embeddings, model, precision))
        if sum(len(pending[0]) for pending in self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered vectors."""
        by_key: dict[tuple[str, str], list] = {}
        for ids, vectors, model, precision in self._pending:
            by_key.setdefault((model, precision), []).append((ids, vectors))
        self._pending.clear()
        for (model, precision), parts in by_key.items():
            ids = [i for part_ids, _ in parts for i in part_ids]
            vectors = np.concatenate([v for _, v in parts])
            self._upsert("photo_embeddings", embeddings_table(ids, vectors, model, self.version, precision))

    def model(self, name: str, source: str, dim: int, completed_at: dt.datetime | None = None) -> None:
        """Record what a model label was loaded from, its dimension, and when a refresh first
        embedded its whole source with it (`completed_at`, UTC; None while not yet)."""
        stamp = None if completed_at is None else int(completed_at.timestamp() * 1000)
        self._upsert(
            "models",
            self._versioned(
                pa.table(
                    {
                        "model": [name],
                        "model_source": [source],
                        "dim": pa.array([dim], pa.uint16()),
                        "completed_at": pa.array([stamp], pa.timestamp("ms", tz="UTC")),
                    }
                )
            ),
        )

    def run(self, row: dict, version: int) -> None:
        """Upsert one etl_runs row (every column of sql/*/002_etl_runs.sql but version)."""
        table = pa.Table.from_pylist([row], schema=ETL_RUNS_SCHEMA)
        table = table.append_column("version", pa.array([version], pa.uint64()))
        self._upsert("etl_runs", table)

    def _versioned(self, table: pa.Table) -> pa.Table:
        return table.append_column("version", pa.array(np.full(table.num_rows, self.version, dtype=np.uint64)))
