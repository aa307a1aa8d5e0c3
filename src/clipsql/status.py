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
from .engines import resolve_target, store_exists, store_holder
from .errors import BadArgument, NotFound
from . import unrecorded
from .lock import LockHolder, StoreLock
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
        held_by: who had the store's engine open when status asked (None: nobody), e.g.
            'pid 123 (clipsql search text beach)'; status waited for it.
        unrecorded: runs that could not get the store and are not in etl_runs yet (they are
            also among `runs`), from `<store>/unrecorded_runs.jsonl`.
    """

    store: str
    running: LockHolder | None
    runs: pd.DataFrame
    tables: pd.DataFrame
    models: pd.DataFrame
    failures: pd.DataFrame
    missing_images: int = 0
    held_by: str | None = None
    unrecorded: int = 0

    def format(self) -> str:
        """Four small tables for the terminal."""
        out = [f"store {self.store}"]
        if self.running is not None:
            out.append(f"a refresh is running: {self.running}")
        if self.held_by is not None:
            out.append(f"held by {self.held_by} when status asked (status waited for it)")
        if self.unrecorded:
            out.append(
                f"{self.unrecorded} run(s) could not get the store and are not in etl_runs yet "
                "(listed below; the next refresh records them)"
            )
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
    wait_s: float | None = None,
) -> StoreStatus:
    """Read the state of a store (see :class:`StoreStatus`).

    Args:
        store / clickhouse_url / duckdb: the backend (see :func:`clipsql.db.open_store`).
        runs: how many of the last runs to list (1..1000).
        wait_s: seconds to wait for a store another process holds (a refresh lets go of it
            between writes); default `$CLIPSQL_WAIT`, else 300.

    Raises:
        BadArgument: runs out of range.
        NotFound: no store there (nothing is created).
        StoreBusy: another process held the store for all of `wait_s`.
        StoreError: the store cannot be opened.
    """
    if not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise BadArgument(f"runs must be an integer from 1 to {MAX_RUNS}, got {runs!r}")
    target = resolve_target(store, clickhouse_url=clickhouse_url, duckdb=duckdb)
    root = target.root
    if not store_exists(target):
        raise NotFound(f"no store at {target.description} (run `clipsql refresh` first)")
    refresh = StoreLock.holder(root) if root.is_dir() else None
    held_by = store_holder(target)
    with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as db, db.session():
        recorded = get_query("etl_runs").run(db, n=runs)
        pending = [row for row in unrecorded.read(root) if row.get("run_id") not in set(recorded["run_id"])]
        return StoreStatus(
            store=db.description,
            running=refresh,
            runs=_with_unrecorded(recorded, pending, runs),
            tables=get_query("table_sizes").run(db),
            models=get_query("models").run(db, min_vectors=0),
            failures=get_query("failures_by_reason").run(db),
            missing_images=missing_cached_images(db),
            held_by=held_by,
            unrecorded=len(pending),
        )


def _with_unrecorded(recorded: pd.DataFrame, pending: list[dict], n: int) -> pd.DataFrame:
    """The last `n` runs of etl_runs and of the unrecorded file together, newest first."""
    if not pending:
        return recorded
    extra = pd.DataFrame(pending).reindex(columns=recorded.columns)
    both = pd.concat([recorded.astype(object), extra.astype(object)], ignore_index=True)
    order = pd.to_datetime(both["started_at"], utc=True)
    return both.iloc[order.sort_values(ascending=False, kind="stable").index].head(n).reset_index(drop=True)


def missing_cached_images(db) -> int:
    """How many photos download_status records as ok have no file in the store's image cache
    (one directory listing, queries/downloaded_photo_ids.sql)."""
    ids = get_query("downloaded_photo_ids").run(db)["photo_id"]
    names = cached_names(db.image_dir)
    return sum(image_path(db.image_dir, photo_id).name not in names for photo_id in ids)
