"""The main job: source -> download -> embed -> load, into one store.

Public entry point: :func:`refresh` (the CLI's `clipsql refresh` calls it unchanged).

A rerun is cheap and changes nothing that is already right: cached images are not fetched
again, photos that failed permanently (HTTP 4xx, undecodable) are not retried unless
`retry_failed`, photos that already have a vector for the model are not embedded again,
and every write is an upsert keyed by photo_id (and model), so no row is doubled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from .db import ClickHouseStore, open_store
from .download import DownloadOptions, DownloadResult, download_photos, image_path
from .embed import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, ClipEmbedder, embed_photos
from .errors import BadArgument, ModelError
from .load import Loader
from .queries import get_query
from .sources import DEFAULT_SOURCE, read_source

log = logging.getLogger(__name__)

#: Vector width the store's HNSW index and CHECK are built for (sql/*/001_core.sql).
STORE_DIM = 512


@dataclasses.dataclass
class StageSummary:
    """One stage of a run: items ok, failed and skipped (already done), and seconds.

    Items are photos, except for 'load' (rows upserted, all tables) and 'index' (vectors
    the HNSW index was built over).
    """

    stage: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class RefreshSummary:
    """What a refresh did: per-stage counts and seconds, and the failures by reason."""

    store: str
    model: str
    source_version: str
    stages: list[StageSummary]
    failures_by_reason: dict[str, int]
    malformed_rows: int
    seconds: float

    def stage(self, name: str) -> StageSummary:
        return next(s for s in self.stages if s.stage == name)

    def format(self) -> str:
        """A small table for the terminal."""
        lines = [f"{'stage':<10}{'ok':>9}{'failed':>9}{'skipped':>9}{'seconds':>10}"]
        for s in self.stages:
            lines.append(f"{s.stage:<10}{s.ok:>9}{s.failed:>9}{s.skipped:>9}{s.seconds:>10.2f}")
        lines.append(f"total {self.seconds:.2f} s; store {self.store}; model {self.model}")
        if self.malformed_rows:
            lines.append(f"malformed source rows skipped: {self.malformed_rows}")
        if self.failures_by_reason:
            lines.append("failures by reason: " + ", ".join(f"{r} {n}" for r, n in sorted(self.failures_by_reason.items())))
        return "\n".join(lines)


def refresh(source: str | os.PathLike = DEFAULT_SOURCE, *, model: str = DEFAULT_MODEL,
            model_name: str | None = None, limit: int | None = None,
            store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
            duckdb: str | os.PathLike | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
            download: DownloadOptions = DownloadOptions(), device: str = "auto",
            retry_failed: bool = False, progress: bool = True) -> RefreshSummary:
    """Run the main job once: read `source`, download, embed with `model`, load into the store.

    Args:
        source: release zip, its URL, a directory of TSV parts, a photos TSV or an image folder.
        model: CLIP hub name or local checkpoint directory.
        model_name: label stored with the vectors (default: hub name, or the directory's name).
        limit: only the first `limit` photos of the source.
        store / clickhouse_url / duckdb: the backend (see :func:`clipsql.db.open_store`).
        batch_size: images per model forward pass.
        download: download settings.
        device: 'auto', 'cpu', 'cuda[:N]' or 'mps'.
        retry_failed: also retry photos whose earlier failure was permanent.
        progress: progress bars on the long stages.

    Returns:
        RefreshSummary with per-stage counts and seconds.

    Raises:
        BadArgument, ModelError: before any photo is downloaded.
        SourceError, StoreError: the source or store cannot be opened.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise BadArgument(f"batch_size must be >= 1, got {batch_size}")
    download.validate()
    version = int(time.time() * 1000)
    embedder = ClipEmbedder(model, device=device, name=model_name, progress=progress)
    if embedder.dim != STORE_DIM:
        raise ModelError(f"model {model!r} gives {embedder.dim}-dim vectors; this store's vector "
                         f"index holds {STORE_DIM}-dim ones (CLIP ViT-B/32 or ViT-B/16)")
    with open_store(store, clickhouse_url=clickhouse_url, duckdb=duckdb) as db:
        loader = Loader(db, version)
        stages = []

        t0 = time.perf_counter()
        data = read_source(source, limit=limit, cache_dir=db.root)
        loader.photos(data)
        stages.append(StageSummary("source", ok=data.photos.num_rows, failed=len(data.malformed),
                                   seconds=time.perf_counter() - t0))

        t0 = time.perf_counter()
        history = get_query("download_history").run(db)
        attempts = dict(zip(history["photo_id"], history["attempts"].astype(int)))
        skip = set() if retry_failed else set(history.loc[(history["status"] == "failed") & (history["permanent"] == 1), "photo_id"])
        wanted = [(pid, url) for pid, url in zip(data.photos["photo_id"].to_pylist(),
                                                 data.photos["photo_image_url"].to_pylist()) if pid not in skip]
        results = download_photos(wanted, db.image_dir, download, progress=progress)
        loader.download_results(results, attempts)
        fetched = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        stages.append(StageSummary("download", ok=len(fetched), failed=len(failed),
                                   skipped=sum(r.cached for r in fetched) + len(data.photos) - len(wanted),
                                   seconds=time.perf_counter() - t0))
        reasons: dict[str, int] = {}
        for r in failed:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        reasons["skipped_permanent_failure"] = len(data.photos) - len(wanted)
        if not reasons["skipped_permanent_failure"]:
            del reasons["skipped_permanent_failure"]

        t0 = time.perf_counter()
        urls = {r.photo_id: r.url for r in fetched}
        done = set(get_query("embedded_photo_ids").run(db, model=embedder.name)["photo_id"])
        todo = [(r.photo_id, image_path(db.image_dir, r.photo_id)) for r in fetched if r.photo_id not in done]
        embed_stage = StageSummary("embed", skipped=len(fetched) - len(todo))
        load_seconds_before = loader.seconds
        unreadable = []
        for batch in embed_photos(todo, embedder, batch_size=batch_size, progress=progress):
            loader.embeddings(batch.photo_ids, batch.embeddings, embedder.name)
            embed_stage.ok += len(batch.photo_ids)
            embed_stage.failed += len(batch.failures)
            for photo_id, reason, detail in batch.failures:
                # A cached file that no longer decodes is dropped so a later run fetches it anew.
                image_path(db.image_dir, photo_id).unlink(missing_ok=True)
                log.warning("photo %s: cached image unreadable (%s: %s)", photo_id, reason, detail)
                unreadable.append(DownloadResult(photo_id, urls[photo_id], "failed", reason="cache_unreadable",
                                                 detail=f"{reason}: {detail}"))
                reasons["cache_unreadable"] = reasons.get("cache_unreadable", 0) + 1
        loader.flush()
        loader.download_results(unreadable, attempts)
        loader.model(embedder.name, embedder.source, embedder.dim)
        embed_stage.seconds = time.perf_counter() - t0 - (loader.seconds - load_seconds_before)
        stages.append(embed_stage)

        stages.append(StageSummary("load", ok=sum(loader.rows_written.values()), seconds=loader.seconds))
        t0 = time.perf_counter()
        if isinstance(db, ClickHouseStore) and embed_stage.ok:
            db.materialize_vector_index()
        stages.append(StageSummary("index", ok=embed_stage.ok, seconds=time.perf_counter() - t0))
        summary = RefreshSummary(db.description, embedder.name, data.version, stages, reasons,
                                 len(data.malformed), time.perf_counter() - started)
    log.info("refresh done in %.1f s", summary.seconds)
    return summary
