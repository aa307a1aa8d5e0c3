"""The state of a store: the last refresh runs, table sizes, models and failures by reason.

Public entry point: :func:`status` (the CLI's `clipsql status` prints its
:meth:`StoreStatus.format`). Its SQL is the named queries etl_runs, table_sizes, models and
failures_by_reason of queries/, which run as well in any SQL console.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd

from .cache import cached_names, image_path
from .db import open_store
from .engines import capabilities_of, resolve_target, store_exists
from .errors import BadArgument, NotFound
from .lock import LockHolder, StoreLock, StoreLocked
from .queries import get_query

#: Most runs `status` lists.
MAX_RUNS = 1000


@dataclasses.dataclass
class StoreStatus:
    """What :func:`status` found.

    Attributes:
        store: where the store is (no password).
        running: who holds the refresh lock now (None: no refresh runs).
        runs: the last runs, newest first (columns of queries/etl_runs.sql).
        tables: table_name, row_count (queries/table_sizes.sql).
        models: model, vectors, complete, completed_at, ... (queries/models.sql).
        failures: reason, permanent, photos, max_attempts, last_attempt_at
            (queries/failures_by_reason.sql).
        missing_images: photos recorded as downloaded whose cached image file is gone
            (the next refresh fetches them again).
    """

    store: str
    running: LockHolder | None
    runs: pd.DataFrame
    tables: pd.DataFrame
    models: pd.DataFrame
    failures: pd.DataFrame
    missing_images: int = 0

    def format(self) -> str:
        """Four small tables for the terminal."""
        out = [f"store {self.store}"]
        if self.running is not None:
            out.append(f"a refresh is running: {self.running}")
        out.append("")
        out.append("last runs:")
        if self.runs.empty:
            out.append("  (none yet)")
        else:
            runs = pd.DataFrame(
                {
                    "started_at": self.runs["started_at"].map(_stamp),
                    "status": self.runs["status"],
                    "seconds": self.runs["seconds"].map(lambda s: f"{s:.1f}"),
                    "photos": self.runs["source_ok"],
                    "downloaded": self.runs["download_ok"],
                    "dl_failed": self.runs["download_failed"],
                    "embedded": self.runs["embed_ok"],
                    "deleted": self.runs["deleted"] + self.runs["purged"],
                    "model": self.runs["model"],
                    "error": self.runs["error"].fillna("").map(lambda e: e[:60]),
                    "run_id": self.runs["run_id"].map(lambda r: r[:12]),
                }
            )
            out.append(_indent(runs.to_string(index=False)))
        out.append("")
        out.append("tables:")
        out.append(
            _indent(self.tables.rename(columns={"table_name": "table", "row_count": "rows"}).to_string(index=False))
        )
        out.append("")
        out.append("models:")
        if self.models.empty:
            out.append("  (none yet)")
        else:
            models = self.models[["model", "vectors", "complete", "completed_at", "model_source"]].copy()
            models["completed_at"] = models["completed_at"].map(_stamp)
            out.append(_indent(models.to_string(index=False)))
        out.append("")
        out.append("download failures by reason:")
        if self.failures.empty:
            out.append("  (none)")
        else:
            failures = self.failures.copy()
            failures["permanent"] = failures["permanent"].map(lambda p: "yes" if int(p) else "no (retried)")
            failures["last_attempt_at"] = failures["last_attempt_at"].map(_stamp)
            out.append(_indent(failures.to_string(index=False)))
        out.append("")
        out.append(
            f"image cache: {self.missing_images} photos recorded as downloaded have no cached image"
            + (" (the next refresh fetches them again)" if self.missing_images else "")
        )
        return "\n".join(out)


def _stamp(value) -> str:
    if value is None or pd.isna(value):
        return "-"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def status(
    store: str | os.PathLike | None = None,
    *,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    runs: int = 10,
) -> StoreStatus:
    """Read the state of a store (see :class:`StoreStatus`).

    Args:
        store / clickhouse_url / duckdb: the backend (see :func:`clipsql.db.open_store`).
        runs: how many of the last runs to list (1..1000).

    Raises:
        BadArgument: runs out of range.
        NotFound: no store there (nothing is created).
        StoreLocked: an embedded store (chdb, DuckDB) is busy with a refresh: those engines
            let one process open a store at a time, so status waits for the refresh to end.
        StoreError: the store cannot be opened.
    """
    if not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise BadArgument(f"runs must be an integer from 1 to {MAX_RUNS}, got {runs!r}")
    target = resolve_target(store, clickhouse_url=clickhouse_url, duckdb=duckdb)
    root = target.root
    if not store_exists(target):
        raise NotFound(f"no store at {target.description} (run `clipsql refresh` first)")
    holder = StoreLock.holder(root) if root.is_dir() else None
    if holder is not None and capabilities_of(target).one_process:
        raise StoreLocked(
            root / "refresh.lock",
            holder,
            hint=" (chdb and DuckDB let one process open a store at a time: ask again when it ends)",
        )
    with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb) as db:
        return StoreStatus(
            store=db.description,
            running=holder,
            runs=get_query("etl_runs").run(db, n=runs),
            tables=get_query("table_sizes").run(db),
            models=get_query("models").run(db, min_vectors=0),
            failures=get_query("failures_by_reason").run(db),
            missing_images=missing_cached_images(db),
        )


def missing_cached_images(db) -> int:
    """How many photos download_status records as ok have no file in the store's image cache
    (one directory listing, queries/downloaded_photo_ids.sql)."""
    ids = get_query("downloaded_photo_ids").run(db)["photo_id"]
    names = cached_names(db.image_dir)
    return sum(image_path(db.image_dir, photo_id).name not in names for photo_id in ids)
