"""The main job: source -> download -> embed -> load, into one store, incrementally.

Public entry point: :func:`refresh` (the CLI's `clipsql refresh` calls it unchanged).

Photos stream through in chunks (`chunk_size` photos): each chunk's metadata is upserted,
its missing images downloaded, its photos without a vector for the model embedded and
their vectors inserted before the next chunk is read, so memory does not grow with the
size of the source and a killed run loses at most one chunk of work.

A rerun is cheap and changes nothing that is already right:

- photos with a cached image and a vector for the model are neither fetched nor embedded;
  metadata is upserted on every run, so a changed field (new stats_views) is updated
  without embedding anything again;
- a permanent download failure (HTTP 4xx, undecodable) is not retried unless
  `retry_failed`; a transient one (timeout, 5xx, connection error) is retried once
  `last_attempt_at + retry_backoff_s * 2**(attempts - 1)` has passed (capped at
  :data:`MAX_RETRY_BACKOFF_S`);
- photos gone from the source (a run that read the whole source did not see them) are
  flagged `is_deleted = 1` and kept, or with `purge` removed from every table and from
  the image cache;
- a new model embeds every photo beside the vectors of the others; it becomes *complete*
  (models.completed_at) when a run ends with every photo of the store that has an image
  (and is not flagged deleted) embedded with it, and search defaults to the newest
  complete model (so a trial run with a limit does not change what search uses);
- every write is an upsert keyed by photo_id (and model), so no row is doubled.

Shards, for schedulers that fan out (N Airflow tasks, N cron hosts): a run with `shard`
'I/N' downloads and embeds only the photos with `cityHash64(photo_id) % N = I`
(:mod:`clipsql.shards`) and upserts only their metadata; it leaves the steps that need the
whole source to one run with `finish` after all shards (the optional files, photos gone
from the source, the model's completion, the vector index): a shard never flags a photo
deleted, so no photo is lost because another shard owns it. A `finish` run upserts every
photo's metadata and does those steps, downloading and embedding nothing; an unsharded run
does everything, as before.

Executors: download and embed run in this process (`executor='local'`: download threads,
then the model batch by batch), or on Ray Data (`'ray'`, `'ray://host:port'`:
:mod:`clipsql.ray_executor`, imported only then); either way the results come back to this
process, which writes every row through the same upserts.

Crash safety: a run may be killed at any moment (kill -9) and rerun. Images reach the cache
by atomic rename; a photo's metadata row is written before its vector, and search joins
the two, so no photo is searchable without its vector; each chunk's vectors go in one
insert; the rerun takes over the lock, marks the dead run 'interrupted' in etl_runs and
does what is missing. One refresh per store runs at a time (:mod:`clipsql.lock`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import logging
import math
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from .cache import cached_names, image_path, remove_stale_temp_files
from .constants import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EXECUTOR,
    DEFAULT_MAX_DELETE_FRACTION,
    DEFAULT_MODEL,
    DEFAULT_RETRY_BACKOFF_S,
)
from . import unrecorded
from .db import Store, check_wait, open_store, store_root
from .download import DownloadOptions, DownloadResult, download_photos
from .precision import check_precision, check_supported
from .embed import (
    EMBED_FAILED,
    Embedder,
    batch_size_for,
    check_device_name,
    check_dual_encoder,
    embed_photos,
    model_label,
    resolve_device,
)
from .errors import BadArgument, ModelError, SourceError, StoreBusy
from .load import Loader
from .lock import StoreLock
from .queries import get_query
from .shards import Shard, parse_shard
from .sources import DEFAULT_SOURCE, SourceReader, open_source

log = logging.getLogger(__name__)

# The refresh's defaults (DEFAULT_CHUNK_SIZE, DEFAULT_RETRY_BACKOFF_S, DEFAULT_MAX_DELETE_FRACTION)
# live in clipsql.constants, where clipsql.settings (below this module) reads them too;
# `from clipsql.refresh import DEFAULT_CHUNK_SIZE` works as before.
#: Longest wait before a transient failure is retried again (one week), seconds.
MAX_RETRY_BACKOFF_S = 7 * 24 * 3600.0
STAGES = ("source", "download", "embed", "load", "index")


@dataclasses.dataclass
class StageSummary:
    """One stage of a run: items ok, failed and skipped (already done), and seconds.

    Items are photos, except for 'load' (rows upserted, all tables) and 'index' (vectors
    embedded by the run, which the HNSW index was rebuilt over).
    """

    stage: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class RefreshSummary:
    """What a refresh did: per-stage counts and seconds, the failures by reason, and the
    photos flagged deleted (`deleted`) or purged (`purged`) because the source lost them."""

    store: str
    model: str
    source_version: str
    stages: list[StageSummary]
    failures_by_reason: dict[str, int]
    malformed_rows: int
    seconds: float
    run_id: str = ""
    deleted: int = 0
    purged: int = 0
    skipped_entries: list[str] = dataclasses.field(default_factory=list)
    renamed: int = 0
    shard: str | None = None
    finish: bool = False

    def stage(self, name: str) -> StageSummary:
        return next(s for s in self.stages if s.stage == name)

    def format(self) -> str:
        """A small table for the terminal."""
        lines = [f"{'stage':<10}{'ok':>9}{'failed':>9}{'skipped':>9}{'seconds':>10}"]
        for s in self.stages:
            lines.append(f"{s.stage:<10}{s.ok:>9}{s.failed:>9}{s.skipped:>9}{s.seconds:>10.2f}")
        lines.append(f"total {self.seconds:.2f} s; store {self.store}; model {self.model}; run {self.run_id}")
        if self.shard is not None:
            lines.append(
                f"shard {self.shard}: the optional files, deletions, model completion and vector index "
                "are left to `clipsql refresh --finish` once every shard has run"
            )
        if self.finish:
            lines.append("finish: metadata, optional files, deletions, model completion and vector index")
        if self.deleted or self.purged:
            lines.append(f"gone from the source: {self.deleted} flagged deleted, {self.purged} purged")
        if self.renamed:
            lines.append(f"image-folder photos renamed to their path ids: {self.renamed}")
        if self.malformed_rows:
            lines.append(f"malformed source rows skipped: {self.malformed_rows}")
        if self.skipped_entries:
            shown = self.skipped_entries[:10]
            more = (
                f" (and {len(self.skipped_entries) - len(shown)} more)"
                if len(self.skipped_entries) > len(shown)
                else ""
            )
            lines.append(f"folder entries skipped: {len(self.skipped_entries)}{more}")
            lines.extend(f"  {entry}" for entry in shown)
        if self.failures_by_reason:
            lines.append(
                "failures by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(self.failures_by_reason.items()))
            )
        return "\n".join(lines)


def retry_due(
    permanent: bool,
    attempts: int,
    last_attempt_at: dt.datetime,
    now: dt.datetime,
    *,
    base_s: float = DEFAULT_RETRY_BACKOFF_S,
    retry_failed: bool = False,
) -> bool:
    """Whether a photo whose last download failed is tried again now.

    Permanent failures only with `retry_failed`; transient ones once
    `last_attempt_at + min(base_s * 2**(attempts - 1), MAX_RETRY_BACKOFF_S)` has passed
    (or at once with `retry_failed`). Times are timezone-aware; `base_s` in seconds.
    """
    if retry_failed:
        return True
    if permanent:
        return False
    wait = min(base_s * 2.0 ** max(attempts - 1, 0), MAX_RETRY_BACKOFF_S)
    return now >= last_attempt_at + dt.timedelta(seconds=wait)


_RAY_ADDRESS_RE = re.compile(r"^ray://[^\s/]+$")


def parse_executor(executor: str) -> str | None:
    """The Ray address of an executor setting: None for 'local' (download and embed in this
    process), '' for 'ray' (a local Ray instance, or the cluster of `$RAY_ADDRESS`), the
    address itself for 'ray://host:port' (a running cluster, through Ray Client).

    Raises:
        BadArgument: any other value, or 'ray...' where the `ray` package is not installed
            (`pip install 'clipsql[ray]'`).
    """
    if executor == "local":
        return None
    if not isinstance(executor, str) or not (executor == "ray" or _RAY_ADDRESS_RE.match(executor)):
        raise BadArgument(f"executor must be local, ray or ray://host:port, got {executor!r}")
    if importlib.util.find_spec("ray") is None:
        raise BadArgument(
            f"executor {executor!r} needs Ray, which is not installed: pip install 'clipsql[ray]' "
            "(or run with --executor local)"
        )
    return "" if executor == "ray" else executor


def refresh(
    source: str | os.PathLike = DEFAULT_SOURCE,
    *,
    model: str = DEFAULT_MODEL,
    model_name: str | None = None,
    limit: int | None = None,
    store: str | os.PathLike | None = None,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    batch_size: int | None = None,
    download: DownloadOptions = DownloadOptions(),
    device: str = "auto",
    precision: str = "fp32",
    retry_failed: bool = False,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    purge: bool = False,
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
    max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION,
    wait_s: float | None = None,
    shard: str | None = None,
    finish: bool = False,
    executor: str = DEFAULT_EXECUTOR,
) -> RefreshSummary:
    """Run the main job once: read `source`, download, embed with `model`, load into the store.

    Args:
        source: release zip, its URL, a directory of TSV parts, a photos TSV or an image folder.
        model: CLIP hub name or local checkpoint directory.
        model_name: label stored with the vectors (default: hub name, or the directory's name).
        limit: only the first `limit` photos of the source (then nothing is flagged deleted).
        store / clickhouse_url / duckdb: the backend (see :func:`clipsql.db.open_store`);
            `store` is also the directory of the image cache and of the refresh lock.
        batch_size: images per model forward pass; default chosen for the device
            (:func:`clipsql.embed.batch_size_for`: 32 on a CPU, 256 on a GPU of >= 16 GiB).
        download: download settings.
        device: 'auto', 'cpu', 'cuda[:N]' or 'mps'.
        precision: what the image tower runs at: fp32, bf16, fp16, int8 or auto
            (:mod:`clipsql.precision`); recorded with each vector (embed_precision).
        retry_failed: retry every failed photo now, permanent failures included.
        progress: progress bars on the long stages.
        chunk_size: photos downloaded, embedded and loaded at a time (bounds memory).
        purge: remove photos gone from the source from every table and the image cache,
            instead of flagging them deleted.
        retry_backoff_s: base of the wait before a transient failure is retried, seconds.
        max_delete_fraction: largest share (0..1) of the store's photos this run may flag
            deleted (or, with `purge`, remove) because the source lost them; a run that would
            do more stops before any data write (1.0 allows anything).
        wait_s: seconds to wait for a store another process holds (a notebook, a search);
            default `$CLIPSQL_WAIT`, else 300. The refresh itself holds the engine only
            while it reads or writes: it lets go while it downloads and embeds as soon as
            another process waits (see :class:`clipsql.engines.base.Store`).
        shard: 'I/N' (0 <= I < N): download and embed only the photos with
            `cityHash64(photo_id) % N = I`, one of N tasks of a scheduler; the optional files,
            photos gone from the source, the model's completion and the vector index are left
            to a run with `finish` (a shard flags nothing deleted). None: every photo.
        finish: the final step once every shard has run: upsert every photo's metadata and
            the optional files, flag (or purge) photos gone from the source, complete the
            model, bring the vector index up to date; nothing is downloaded or embedded.
        executor: 'local' (this process), 'ray' (Ray Data on a local Ray instance, or the
            cluster of `$RAY_ADDRESS`) or 'ray://host:port' (a running cluster; its workers
            must see the store directory at the same path). Ray needs the `ray` extra.

    Returns:
        RefreshSummary with per-stage counts and seconds (also written to etl_runs).

    Raises:
        BadArgument: before any work (the store is not touched): a value out of range, a shard
            that is not I/N with 0 <= I < N, `shard` with `finish`, `finish` with `limit`, an
            unknown executor, or `ray` where Ray is not installed.
        StoreLocked: another refresh holds the store's lock (raised at once).
        StoreBusy: another process held the store for all of `wait_s`; the failed run is
            recorded in `<store>/unrecorded_runs.jsonl` (status lists it; the next refresh
            moves it into etl_runs).
        ModelError, SourceError, StoreError: the model, source or store cannot be used (an
            empty or header-only photos file; a run that would flag or purge more than
            `max_delete_fraction` of the store); the run is recorded in etl_runs as 'failed'.
    """
    started = time.perf_counter()
    if batch_size is None:
        batch_size = batch_size_for(resolve_device(check_device_name(device)))
    _check_arguments(model, limit, batch_size, chunk_size, purge, retry_backoff_s, max_delete_fraction)
    owned = parse_shard(shard)
    ray_address = parse_executor(executor)
    if owned is not None and finish:
        raise BadArgument("shard and finish exclude each other: run every shard, then one run with --finish")
    if finish and limit is not None:
        raise BadArgument("finish needs the whole source: it cannot be combined with a limit")
    if ray_address is not None and device == "mps":
        raise BadArgument("device mps cannot be used with the Ray executor: use auto, cpu or cuda[:N]")
    check_precision(precision)
    if ray_address is not None and precision != "fp32":
        raise BadArgument(f"precision {precision} is not available with the Ray executor yet: use fp32")
    if precision not in ("auto", "fp32") and device != "auto":
        check_supported(precision, device)
    download.validate()
    label = model_name or model_label(model)
    wait_s = check_wait(wait_s)
    root = store_root(store)
    identity: dict[str, Any] = dict(source=os.fspath(source), model=label, model_source=str(model), limit=limit)
    with (
        StoreLock(root) as lock,
        _open_or_record(root, identity, store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as db,
    ):
        # A shard does not mark runs still 'running' as interrupted: they may be other shards,
        # running on other hosts against the same server; the finish (or an unsharded run) does.
        run = _RunLog(db, **identity, mark_interrupted=owned is None)
        if lock.previous is not None:
            log.warning("the previous refresh (%s) was killed; this run completes its work", lock.previous)
        if db.image_dir.is_dir() and (stale := remove_stale_temp_files(db.image_dir)):
            log.warning("removed %d temporary files a killed run left in %s", stale, db.image_dir)
        job = _Job(
            db,
            run,
            batch_size=batch_size,
            download=download,
            retry_failed=retry_failed,
            progress=progress,
            chunk_size=chunk_size,
            purge=purge,
            retry_backoff_s=retry_backoff_s,
            max_delete_fraction=max_delete_fraction,
            shard=owned,
            finish=finish,
        )
        try:
            # The source first: opening it reads only names and sizes, so a missing source is
            # reported before seconds are spent loading the model.
            reader = open_source(source, limit=limit, cache_dir=db.root)
            job.plan(reader)
            # The refresh embeds photos only: the image tower alone (about half the weights).
            # With Ray (or for a finish, which embeds nothing) this copy only names the model and
            # its width: it stays on the CPU, the GPUs are the workers'.
            here = device if ray_address is None and not finish else "cpu"
            embedder = Embedder(
                model,
                device=here,
                name=model_name,
                progress=progress,
                towers="image",
                precision=precision if ray_address is None and not finish else "fp32",
            )
            if ray_address is not None and not finish:
                from .ray_executor import RayExecutor  # only when asked: Ray is an optional extra

                job.executor = RayExecutor(
                    ray_address,
                    model=str(model),
                    name=embedder.name,
                    device=device,
                    batch_size=batch_size,
                    download=download,
                    image_dir=db.image_dir,
                )
            try:
                job.run(embedder, reader)
            finally:
                if job.executor is not None:
                    job.executor.close()
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            run.finish(
                job,
                "interrupted" if interrupted else "failed",
                time.perf_counter() - started,
                error=f"{type(exc).__name__}: {exc}".splitlines()[0][:1000],
            )
            raise
        run.finish(job, "ok", time.perf_counter() - started)
        summary = RefreshSummary(
            db.description,
            label,
            run.source_version,
            job.stages(),
            job.reasons,
            job.malformed,
            time.perf_counter() - started,
            run.run_id,
            job.deleted,
            job.purged,
            [str(e) for e in job.skipped_entries],
            job.renamed,
            None if owned is None else str(owned),
            finish,
        )
    log.info("refresh %s done in %.1f s", summary.run_id, summary.seconds)
    return summary


def _open_or_record(root: Path, identity: dict, store, **options) -> Store:
    """:func:`open_store`; when another process holds the store for all of the wait, the
    failed run is written to the store's file of unrecorded runs before StoreBusy is raised."""
    started = dt.datetime.now(dt.timezone.utc)
    try:
        return open_store(store, **options)
    except StoreBusy as busy:
        row = run_row(run_id=uuid.uuid4().hex, started_at=started, **identity)
        ended = dt.datetime.now(dt.timezone.utc)
        row.update(status="failed", ended_at=ended, error=f"StoreBusy: {busy}"[:1000])
        row.update(seconds=(ended - started).total_seconds(), version=int(time.time() * 1000))
        unrecorded.add(root, row)
        raise


def run_row(
    *, run_id: str, started_at: dt.datetime, source: str, model: str, model_source: str, limit: int | None
) -> dict:
    """A run's etl_runs row as it starts: status 'running', every count 0 (no version)."""
    row = {
        "run_id": run_id,
        "started_at": started_at,
        "ended_at": None,
        "status": "running",
        "error": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "model": model,
        "model_source": model_source,
        "source": source,
        "source_version": "",
        "photo_limit": limit,
    }
    for stage in ("source", "download", "embed"):
        row.update({f"{stage}_ok": 0, f"{stage}_failed": 0, f"{stage}_s": 0.0})
    row.update(
        {
            "download_skipped": 0,
            "embed_skipped": 0,
            "load_rows": 0,
            "load_s": 0.0,
            "index_s": 0.0,
            "deleted": 0,
            "purged": 0,
            "seconds": 0.0,
        }
    )
    return row


def _check_arguments(model, limit, batch_size, chunk_size, purge, retry_backoff_s, max_delete_fraction) -> None:
    for name, value, most in (("batch_size", batch_size, 4096), ("chunk_size", chunk_size, 1_000_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise BadArgument(f"{name} must be an integer from 1 to {most}, got {value!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadArgument(f"limit must be a positive integer, got {limit!r}")
    if purge and limit is not None:
        raise BadArgument("purge needs the whole source: it cannot be combined with a limit")
    if (
        isinstance(retry_backoff_s, bool)
        or not isinstance(retry_backoff_s, (int, float))
        or not 0 <= retry_backoff_s <= MAX_RETRY_BACKOFF_S
    ):
        raise BadArgument(
            f"retry_backoff_s must be from 0 to {MAX_RETRY_BACKOFF_S:g} seconds (a week), got {retry_backoff_s!r}"
        )
    if (
        isinstance(max_delete_fraction, bool)
        or not isinstance(max_delete_fraction, (int, float))
        or not 0 <= max_delete_fraction <= 1
    ):
        raise BadArgument(f"max_delete_fraction must be a share between 0 and 1, got {max_delete_fraction!r}")
    check_dual_encoder(model)


class _RunLog:
    """The run's row in etl_runs: written when the run starts and when it ends.

    The run's `version` (the ReplacingMergeTree version of every row it writes) is its
    start in ms, but above every earlier run's, so its upserts win even if the clock went
    back. Runs left 'running' by killed processes are marked 'interrupted' (this process
    holds the lock, so they are dead), unless `mark_interrupted` is False (a shard: the
    others may be running elsewhere).
    """

    def __init__(
        self,
        db: Store,
        *,
        source: str,
        model: str,
        model_source: str,
        limit: int | None,
        mark_interrupted: bool = True,
    ):
        self.db = db
        self.run_id = uuid.uuid4().hex
        last = int(get_query("etl_last_run_version").run(db)["version"].iloc[0])
        # +2: the end-of-run row takes version + 1.
        self.version = max(int(time.time() * 1000), last + 2)
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.source_version = ""
        self.row = run_row(
            run_id=self.run_id,
            started_at=self.started_at,
            source=source,
            model=model,
            model_source=model_source,
            limit=limit,
        )
        # Nights that could not get the store (or lost it before their last row) are written now
        # that one did; before the dead runs are marked, so that a run which had written its
        # start row ends 'failed' with its error, not 'interrupted'.
        earlier = unrecorded.read(db.root)
        for row in earlier:
            version = int(row.pop("version", 0) or 0)
            Loader(db, version).run(row, version)
        if earlier:
            unrecorded.clear(db.root, earlier)
            log.info("recorded %d earlier run(s) that could not get the store in etl_runs", len(earlier))
        if mark_interrupted:
            db.run_script("mark_runs_interrupted", {"run_version": self.version})
        Loader(db, self.version).run(self.row, self.version)
        log.info("run %s started (version %d) on %s", self.run_id, self.version, db.description)

    def finish(self, job: _Job, status: str, seconds: float, error: str | None = None) -> None:
        """Write the end-of-run row; a failure to write it is logged, never raised."""
        row = dict(
            self.row,
            status=status,
            error=error,
            ended_at=dt.datetime.now(dt.timezone.utc),
            source_version=self.source_version,
            seconds=seconds,
        )
        for s in job.stages():
            if s.stage in ("source", "download", "embed"):
                row.update({f"{s.stage}_ok": s.ok, f"{s.stage}_failed": s.failed, f"{s.stage}_s": s.seconds})
            if s.stage in ("download", "embed"):
                row[f"{s.stage}_skipped"] = s.skipped
        row.update(
            load_rows=job.stage("load").ok,
            load_s=job.stage("load").seconds,
            index_s=job.stage("index").seconds,
            deleted=job.deleted,
            purged=job.purged,
        )
        try:
            # What was stored, read back: an interrupt between an insert and its count
            # cannot make the log claim vectors that were never saved (or miss saved ones).
            row["embed_ok"] = int(get_query("run_vector_count").run(self.db, run_version=self.version)["n"].iloc[0])
        except Exception:  # noqa: BLE001 - keep the counted figure; the row itself matters more
            log.debug("could not count the vectors of run %s", self.run_id, exc_info=True)
        try:
            Loader(self.db, self.version).run(row, self.version + 1)
        except Exception:  # the run's own error matters more than its log row
            log.exception("could not record the end of run %s in etl_runs; recording it beside the store", self.run_id)
            # e.g. another process held the store for all of the wait: the next refresh writes it.
            unrecorded.add(self.db.root, dict(row, version=self.version + 1))


@dataclasses.dataclass
class _Todo:
    """The photos of one or more chunks that need work, and what the store said of them.

    Attributes:
        photos: (photo_id, url) to download (a photo already in the cache is found there).
        embed: those of `photos` without a vector for the model.
        attempts: photo_id -> download attempts recorded so far.
        recorded_ok: photos whose status row already says ok.
        healing: photos with a vector whose cached image is gone (only fetched again).
    """

    photos: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    embed: set[str] = dataclasses.field(default_factory=set)
    attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    recorded_ok: set[str] = dataclasses.field(default_factory=set)
    healing: set[str] = dataclasses.field(default_factory=set)

    def extend(self, other: _Todo) -> None:
        self.photos += other.photos
        self.embed |= other.embed
        self.attempts.update(other.attempts)
        self.recorded_ok |= other.recorded_ok
        self.healing |= other.healing


class _Job:
    """One run's work over a store: the plan (a first pass over the source, compared with
    the store before any write), the chunks, then the optional files, the photos gone from
    the source, the model's completion and the vector index.

    A shard (`shard`) does the chunks of its own photos only; a finish (`finish`) upserts
    every chunk's metadata, downloads and embeds nothing, and does the rest."""

    def __init__(
        self,
        db: Store,
        run: _RunLog,
        *,
        batch_size: int,
        download: DownloadOptions,
        retry_failed: bool,
        progress: bool,
        chunk_size: int,
        purge: bool,
        retry_backoff_s: float,
        max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION,
        shard: Shard | None = None,
        finish: bool = False,
    ):
        self.db, self.run_log = db, run
        self.batch_size, self.download_options = batch_size, download
        self.retry_failed, self.progress, self.chunk_size = retry_failed, progress, chunk_size
        self.purge, self.retry_backoff_s = purge, retry_backoff_s
        self.max_delete_fraction = max_delete_fraction
        self.shard, self.finish = shard, finish
        #: None: download and embed here; else the Ray executor (clipsql.ray_executor.RayExecutor).
        self.executor: Any = None
        self.pending = _Todo()  # photos waiting for the executor (Ray: one dataset per window)
        # _chunk flushes the loader after every model batch (an interrupt loses at most one),
        # so the loader's own flush threshold never comes into play here.
        self.loader = Loader(db, run.version)
        self._stages = {name: StageSummary(name) for name in STAGES}
        self.reasons: dict[str, int] = {}
        self.malformed = 0
        self.deleted = self.purged = self.renamed = self.healed = 0
        self.skipped_entries: list = []
        self.total = 0
        self.allow_local_files = False
        self.cached_names: set[str] = set()
        self.bars: dict[str, tqdm] = {}

    def stage(self, name: str) -> StageSummary:
        return self._stages[name]

    def stages(self) -> list[StageSummary]:
        load = self._stages["load"]
        load.ok, load.seconds = sum(self.loader.rows_written.values()), self.loader.seconds
        return list(self._stages.values())

    def _count(self, reason: str, n: int = 1) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + n

    def _owned(self, table: pa.Table) -> pa.Table:
        """The rows of `table` (a photo_id column) that this run's shard owns (all: no shard)."""
        return table if self.shard is None else table.filter(pa.array(self.shard.mask(table["photo_id"])))

    def plan(self, reader: SourceReader) -> None:
        """Read the source's photo ids once and compare them with the store, before any data
        is written: an empty source is an error; a full run that would flag deleted (or
        purge) more than `max_delete_fraction` of the store's photos stops here (a shard
        flags nothing, so it does not check); image-folder photos stored under their old ids
        (the file stem) are renamed to their path ids (by a shard, those it owns).

        Raises:
            SourceError: the source holds no photo, or the deletion share is over the limit.
        """
        t0 = time.perf_counter()
        malformed: list = []
        keys = reader.photo_keys(malformed)
        self.stage("source").seconds += time.perf_counter() - t0
        self.skipped_entries = list(reader.skipped)
        self.allow_local_files = reader.kind == "folder"
        if keys.num_rows == 0:
            why = f"; {len(malformed)} malformed rows, the first: {malformed[0]}" if malformed else ""
            raise SourceError(
                f"source {reader.location!r} holds no photos: its photos file is empty or has only a header{why}"
            )
        owned = self._owned(keys)
        self.total = owned.num_rows
        if self.shard is not None:
            log.info("shard %s: %d of the source's %d photos", self.shard, owned.num_rows, keys.num_rows)
        store = get_query("store_photos").run(self.db)
        renames = self._folder_renames(keys, store) if self.allow_local_files and not store.empty else []
        if self.shard is not None:
            mine = set(owned["photo_id"].to_pylist())
            renames = [(old, new) for old, new in renames if new in mine]
        if reader.limit is None and self.shard is None and not store.empty:
            kept = set(keys["photo_id"].to_pylist()) | {old for old, _ in renames}
            missing = ~store["photo_id"].isin(kept)
            live = store["is_deleted"].astype(int) == 0
            would = int(missing.sum()) if self.purge else int((missing & live).sum())
            base = len(store) if self.purge else int(live.sum())
            if base and would > self.max_delete_fraction * base:
                verb = "purge" if self.purge else "flag deleted"
                raise SourceError(
                    f"source {reader.location!r} lacks {would} of the store's {base} photos ({would / base:.1%}); "
                    f"this run would {verb} them, over the limit of {self.max_delete_fraction:.0%} of the store, so "
                    f"it stopped before writing anything. If the source really lost them, rerun with "
                    f"--max-delete-fraction {math.ceil(would / base * 100) / 100:g} "
                    f"(or max_delete_fraction in the job file's [refresh] table)"
                )
        if renames:
            self._rename_photos(renames)
        # One directory listing (not a stat or decode per photo): photos recorded ok whose
        # cached image is gone are fetched again (the cache heals).
        self.cached_names = set() if self.finish else cached_names(self.db.image_dir)

    @staticmethod
    def _folder_renames(keys, store) -> list[tuple[str, str]]:
        """Image folders: (old id, new id) of the photos a store holds under their old id
        (clipsql <= 0.1 used the file stem; now the path relative to the folder), matched by
        their file URL."""
        new_by_url = dict(zip(keys["photo_image_url"].to_pylist(), keys["photo_id"].to_pylist()))
        source_ids = set(new_by_url.values())
        return [
            (old, new_by_url[url])
            for old, url in zip(store["photo_id"], store["photo_image_url"])
            if url in new_by_url and old != new_by_url[url] and old not in source_ids
        ]

    def _rename_photos(self, pairs: list[tuple[str, str]]) -> None:
        """Store photos under new ids with their vectors (sql/*/etl/rename_photos.sql), and
        move their cached images."""
        old_ids, new_ids = [p[0] for p in pairs], [p[1] for p in pairs]
        self.db.run_script("rename_photos", {"old_ids": old_ids, "new_ids": new_ids})
        for old, new in pairs:
            old_path, new_path = image_path(self.db.image_dir, old), image_path(self.db.image_dir, new)
            if old_path.is_file() and not new_path.exists():
                os.replace(old_path, new_path)
        self.renamed = len(pairs)
        log.info("%d image-folder photos renamed from their file stem to their path id", len(pairs))

    def run(self, embedder: Embedder, reader: SourceReader) -> None:
        db, loader = self.db, self.loader
        self.run_log.source_version = reader.version
        models = get_query("models").run(db, min_vectors=0)
        known = models[models["model"] == embedder.name]
        if not known.empty and int(known["vectors"].iloc[0]) and int(known["dim"].iloc[0]) != embedder.dim:
            # One label, one width: its vectors are compared with each other and with queries.
            raise ModelError(
                f"model label {embedder.name!r} holds {int(known['dim'].iloc[0])}-dim vectors in "
                f"{db.description}, but {embedder.source!r} gives {embedder.dim}-dim ones: load it "
                "under a label of its own (--model-name)"
            )
        completed_at = None if known.empty or known["complete"].iloc[0] != 1 else known["completed_at"].iloc[0]
        if known.empty or known["model_source"].iloc[0] != embedder.source or int(known["dim"].iloc[0]) != embedder.dim:
            loader.model(
                embedder.name,
                embedder.source,
                embedder.dim,
                completed_at=None if completed_at is None else completed_at.to_pydatetime(),
            )
        log.info("store opened, model %s loaded", embedder.name)

        keep: set[str] | None = set() if reader.limit is not None else None
        photos_seen = 0
        try:
            # One bar per stage, per photo, over the photos of the source (known from the
            # plan): skipped photos advance it at once, the others as they are done. A finish
            # downloads and embeds nothing: no bars.
            for position, name in enumerate(() if self.finish else ("download", "embed")):
                self.bars[name] = tqdm(
                    total=self.total,
                    desc=name,
                    unit="photo",
                    position=position,
                    disable=not self.progress,
                    dynamic_ncols=True,
                )
            batches = reader.photo_batches(self.chunk_size)
            number = 0
            while True:
                t0 = time.perf_counter()
                chunk = next(batches, None)
                if chunk is not None:
                    chunk = self._owned(chunk)
                self.stage("source").seconds += time.perf_counter() - t0
                if chunk is None:
                    break
                if chunk.num_rows == 0:
                    continue
                number += 1
                photos_seen += chunk.num_rows
                if keep is not None:
                    keep.update(chunk["photo_id"].to_pylist())
                self._chunk(number, chunk, reader.version, embedder)
            if self.pending.photos:
                self._run_executor(embedder)
        finally:
            for bar in self.bars.values():
                bar.close()
        self.stage("source").ok = photos_seen
        if self.healed:
            log.warning("%d photos recorded as downloaded had lost their cached image: fetched again", self.healed)
        if self.shard is not None:
            self._malformed(reader)
            log.info(
                "shard %s done: the optional files, photos gone from the source, the model's completion and the "
                "vector index are left to `clipsql refresh --finish` once every shard has run",
                self.shard,
            )
            return

        t0 = time.perf_counter()
        load_before = loader.seconds
        for name, table in reader.extra_batches(keep):
            loader.extra_rows(name, table)
            log.info("%s: %d rows upserted", name, table.num_rows)
        self.stage("source").seconds += time.perf_counter() - t0 - (loader.seconds - load_before)
        self._malformed(reader)

        if reader.limit is None:
            self._gone_photos(photos_seen)
        else:
            log.info("limit %d: photos beyond it are not checked for deletion", reader.limit)

        if completed_at is None:
            missing = int(get_query("photos_without_vector").run(db, model=embedder.name)["n"].iloc[0])
            if missing == 0:
                loader.model(
                    embedder.name, embedder.source, embedder.dim, completed_at=dt.datetime.now(dt.timezone.utc)
                )
                log.info("model %s is complete: every photo of the store has its vector", embedder.name)
            else:
                log.info(
                    "model %s is not complete yet: %d photos of the store have no vector for it", embedder.name, missing
                )

        t0 = time.perf_counter()
        if db.capabilities.vector_index:
            # After every run, even one that loaded nothing: a run killed while it brought the
            # indexes up to date, a store upgraded from 512-only, a vector deleted by hand.
            db.after_load()
            log.info("vector indexes up to date")
        index = self.stage("index")
        index.ok, index.seconds = self.stage("embed").ok, time.perf_counter() - t0

    def _malformed(self, reader: SourceReader) -> None:
        """Count (and log) the source rows skipped as malformed."""
        self.malformed = len(reader.malformed)
        self.stage("source").failed = self.malformed
        if reader.malformed:
            log.warning("%d malformed source rows skipped; first: %s", len(reader.malformed), reader.malformed[0])

    def _advance(self, stage: str, n: int) -> None:
        if n and stage in self.bars:
            self.bars[stage].update(n)

    def _chunk(self, number: int, chunk, source_version: str, embedder: Embedder) -> None:
        """Upsert one chunk's metadata, download what is missing, embed what has no vector
        (a finish: the metadata only; with an executor, the work joins the pending window).

        Counts in the stage summaries (and so in etl_runs) follow the writes: a photo counts
        as downloaded once its status row is written, as embedded once its vector is."""
        self.loader.photo_rows(chunk, source_version)
        log.info("chunk %d: %d photos upserted", number, chunk.num_rows)
        if self.finish:
            return
        t0 = time.perf_counter()
        todo = self._todo(chunk["photo_id"].to_pylist(), chunk["photo_image_url"].to_pylist(), embedder)
        self.stage("download").seconds += time.perf_counter() - t0
        if self.executor is not None:
            self.pending.extend(todo)
            if len(self.pending.photos) >= self.executor.window:
                self._run_executor(embedder)
            return
        self._local(number, todo, embedder)

    def _todo(self, ids: list[str], urls: list[str], embedder: Embedder) -> _Todo:
        """What the photos `ids` (with image `urls`) need, from their download history and
        vectors: photos with a cached image and a vector, and failures not yet due for a retry,
        are counted as skipped here."""
        db = self.db
        history = {row.photo_id: row for row in get_query("download_history").run(db, photo_ids=ids).itertuples()}
        embedded = set(get_query("embedded_photo_ids").run(db, model=embedder.name, photo_ids=ids)["photo_id"])
        now = dt.datetime.now(dt.timezone.utc)
        download_stage, embed_stage = self.stage("download"), self.stage("embed")
        todo = _Todo(
            attempts={pid: int(row.attempts) for pid, row in history.items()},
            recorded_ok={pid for pid, row in history.items() if row.status == "ok"},
        )
        for photo_id, url in zip(ids, urls):
            past = history.get(photo_id)
            if past is not None and past.status == "ok" and photo_id in embedded:
                if image_path(db.image_dir, photo_id).name in self.cached_names:
                    download_stage.skipped += 1
                    embed_stage.skipped += 1
                    continue
                todo.healing.add(photo_id)  # vector kept; only the cached image is fetched again
                todo.photos.append((photo_id, url))
            elif (
                past is not None
                and past.status == "failed"
                and not retry_due(
                    bool(past.permanent),
                    int(past.attempts),
                    _utc(past.last_attempt_at),
                    now,
                    base_s=self.retry_backoff_s,
                    retry_failed=self.retry_failed,
                )
            ):
                download_stage.skipped += 1
                self._count("skipped_permanent_failure" if past.permanent else "waiting_to_retry")
            else:
                todo.photos.append((photo_id, url))
                if photo_id not in embedded:
                    todo.embed.add(photo_id)
        self._advance("download", len(ids) - len(todo.photos))
        self._advance("embed", len(ids) - len(todo.photos))
        return todo

    def _local(self, number: int, todo: _Todo, embedder: Embedder) -> None:
        """Download a chunk's photos here (threads), then embed them batch by batch."""
        db, loader = self.db, self.loader
        t0 = time.perf_counter()
        results = download_photos(
            todo.photos,
            db.image_dir,
            self.download_options,
            allow_local_files=self.allow_local_files,
            progress=self.bars.get("download", False),
        )
        self.stage("download").seconds += time.perf_counter() - t0
        fetched = self._downloaded(todo, results)
        log.info("chunk %d: %d downloaded, %d failed", number, len(fetched), len(results) - len(fetched))

        embed_stage = self.stage("embed")
        t0 = time.perf_counter()
        load_before = loader.seconds
        items = [(r.photo_id, image_path(db.image_dir, r.photo_id)) for r in fetched if r.photo_id in todo.embed]
        failed_rows = []
        urls_by_id = {r.photo_id: r.url for r in fetched}
        for batch in embed_photos(items, embedder, batch_size=self.batch_size, progress=False):
            # Each batch is written as it finishes: an interrupt loses at most one batch.
            failed_rows += self._embedded(batch.photo_ids, batch.embeddings, batch.failures, urls_by_id, embedder)
        loader.download_results(failed_rows, todo.attempts)
        embed_stage.seconds += time.perf_counter() - t0 - (loader.seconds - load_before)
        log.info("chunk %d: %d embedded", number, len(items) - len(failed_rows))

    def _run_executor(self, embedder: Embedder) -> None:
        """Download and embed the pending photos on the executor (one Ray dataset), writing
        each batch it hands back: its status rows, then its vectors, then its failures."""
        todo, self.pending = self.pending, _Todo()
        log.info("%d photos to download or embed go to %s", len(todo.photos), self.executor.description)
        for batch in self.executor.run(todo.photos, todo.embed, allow_local_files=self.allow_local_files):
            self.stage("download").seconds += batch.download_s
            self._advance("download", len(batch.results))
            fetched = self._downloaded(todo, batch.results)
            urls_by_id = {r.photo_id: r.url for r in fetched}
            failed_rows = self._embedded(batch.photo_ids, batch.embeddings, batch.failures, urls_by_id, embedder)
            self.loader.download_results(failed_rows, todo.attempts)
            self.stage("embed").seconds += batch.embed_s

    def _downloaded(self, todo: _Todo, results: list[DownloadResult]) -> list[DownloadResult]:
        """Write the status rows of download `results` and count them; returns the photos
        fetched (or found in the cache)."""
        download_stage, embed_stage = self.stage("download"), self.stage("embed")
        # A cached image needs a status row only if it has none saying ok (a run killed
        # between the image's rename and its status insert leaves such a photo).
        record = [r for r in results if not r.cached or r.photo_id not in todo.recorded_ok]
        self.loader.download_results(record, todo.attempts)
        fetched = [r for r in results if r.ok]
        for r in results:
            if not r.ok:
                download_stage.failed += 1
                self._count(r.reason or "unexpected_error")
        download_stage.ok += len(fetched)
        download_stage.skipped += sum(r.cached for r in fetched)
        self.healed += sum(r.ok and r.photo_id in todo.healing for r in results)
        to_embed = sum(r.photo_id in todo.embed for r in fetched)
        embed_stage.skipped += len(fetched) - to_embed
        self._advance("embed", len(results) - to_embed)
        return fetched

    def _embedded(
        self,
        photo_ids: list[str],
        vectors,
        failures: list[tuple[str, str, str]],
        urls_by_id: dict[str, str],
        embedder: Embedder,
    ) -> list[DownloadResult]:
        """Write one batch's vectors and count them; returns the status rows of its failures
        (for the caller to write)."""
        self.loader.embeddings(photo_ids, vectors, embedder.name, embedder.precision)
        self.loader.flush()
        log.debug("%d vectors stored", len(photo_ids))
        embed_stage = self.stage("embed")
        embed_stage.ok += len(photo_ids)
        embed_stage.failed += len(failures)
        failed_rows = [
            self._embed_failure(photo_id, urls_by_id[photo_id], reason, detail) for photo_id, reason, detail in failures
        ]
        self._advance("embed", len(photo_ids) + len(failures))
        return failed_rows

    def _embed_failure(self, photo_id: str, url: str, reason: str, detail: str) -> DownloadResult:
        """The status row of a photo the embed stage could not use. A cached file that no
        longer decodes is dropped so a later run fetches it anew (transient); an image that
        decodes but that the model cannot take is a permanent 'embed_failed'."""
        if reason == EMBED_FAILED:
            log.warning("photo %s: cannot be embedded (%s)", photo_id, detail)
            self._count(EMBED_FAILED)
            return DownloadResult(photo_id, url, "failed", reason=EMBED_FAILED, detail=detail)
        image_path(self.db.image_dir, photo_id).unlink(missing_ok=True)
        log.warning("photo %s: cached image unreadable (%s: %s)", photo_id, reason, detail)
        self._count("cache_unreadable")
        return DownloadResult(photo_id, url, "failed", reason="cache_unreadable", detail=f"{reason}: {detail}")

    def _gone_photos(self, photos_seen: int) -> None:
        """Flag (or with purge, remove) the photos this run's whole-source pass did not see."""
        db, version = self.db, self.run_log.version
        gone = get_query("photos_not_in_run").run(db, run_version=version)
        if gone.empty:
            return
        if photos_seen == 0:
            raise SourceError(
                f"the source holds no valid photo; refusing to flag all {len(gone)} photos "
                "of the store deleted (check the source)"
            )
        t0 = time.perf_counter()
        if self.purge:
            for photo_id in gone["photo_id"]:
                image_path(db.image_dir, photo_id).unlink(missing_ok=True)
            db.run_script("purge_gone_photos", {"run_version": version})
            self.purged = len(gone)
            log.info("%d photos gone from the source purged", self.purged)
        else:
            fresh = int((gone["is_deleted"].astype(int) == 0).sum())
            if fresh:
                db.run_script("mark_photos_deleted", {"run_version": version})
            self.deleted = fresh
            log.info("%d photos gone from the source flagged deleted", fresh)
        self.loader.seconds += time.perf_counter() - t0


def _utc(value) -> dt.datetime:
    """A timestamp from a query (pandas Timestamp or datetime, naive = UTC) as aware UTC."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
