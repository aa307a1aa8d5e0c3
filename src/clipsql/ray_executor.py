"""The refresh's download and embed stages on Ray Data: `clipsql refresh --executor ray`.

Public entry point: :class:`RayExecutor`. The refresh imports this module (and Ray) only when
asked; Ray is an optional extra: `pip install 'clipsql[ray]'`.

The driver (the `clipsql refresh` process) chooses the photos to do as the local executor
does (incrementally, from the store's download history and vectors) and hands them to one
Ray dataset per window of :data:`WINDOW_PHOTOS` photos::

    rows (photo_id, url, embed)     chosen by the driver
      -> download tasks             map_batches, `batch_size` photos a task:
                                    clipsql.download.download_photos (retries, bounded waits,
                                    the image decoded in full, EXIF orientation, 8-bit RGB)
                                    into the image cache, with threads inside each task; at
                                    most ceil(workers / threads) tasks at once, so `workers`
                                    stays the number of requests in flight
      -> embed actors               map_batches, `batch_size` photos a call, on an actor pool:
                                    each actor loads the model once (one GPU each where the
                                    cluster has GPUs) and runs clipsql.embed.embed_photos on
                                    the cached images (decoding overlaps the model)
      -> the driver                 the refresh writes each batch's status rows, then its
                                    vectors, then its failures, through the same upserts as
                                    the local executor

The dataset is run by a small actor of the cluster (:class:`_Pipeline`, no CPU of its own),
which hands its blocks to the refresh process one call at a time, a few blocks ahead: Ray
Data's executor cannot run in a Ray Client process (`ray://`), and one path serves both.

Ray Data streams the rows with backpressure: memory holds what is in flight, not the window.
Ray retries a task whose worker died and restarts a dead actor (Ray Data's defaults); a batch
done twice is absorbed by the upserts, keyed by photo_id (and model), and a download repeated
finds its image in the cache already.

Only the driver opens the store (chdb admits one process at a time). Workers write the image
cache (one atomic rename per image), so on a cluster `<store>/images` must be at the same path
on every node (a shared file system), and clipsql and the model must be installed there too;
:meth:`RayExecutor.run` checks the first on every node before any work. Seconds per stage in
the run summary are summed over the workers (the stages overlap).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from .cache import TEMP_SUFFIX, image_path
from .download import DownloadOptions, DownloadResult, download_photos
from .embed import Embedder, embed_photos
from .errors import ExecutorError

log = logging.getLogger(__name__)

#: Photos per Ray dataset: the driver plans (and upserts the metadata of) this many before
#: their downloads start; one model load per actor per window.
WINDOW_PHOTOS = 65_536
#: Blocks of results the pipeline actor holds ready for the refresh process.
PIPELINE_BLOCKS = 4
#: CPUs a download task reserves.
DOWNLOAD_TASK_CPUS = 0.5
#: CPU threads one embedding actor uses on a cluster without GPUs: one actor per this many CPUs.
CPU_THREADS_PER_ACTOR = 8


@dataclasses.dataclass
class RayBatch:
    """One batch back from the pipeline: the download `results` of its photos, the vectors
    of those embedded (`photo_ids`, (n, dim) float32 L2-normalized `embeddings`), the photos
    the embed stage could not use (photo_id, reason, detail), and the workers' seconds."""

    results: list[DownloadResult]
    photo_ids: list[str]
    embeddings: np.ndarray
    failures: list[tuple[str, str, str]]
    download_s: float
    embed_s: float


class RayExecutor:
    """Download and embed on a Ray cluster (or a local Ray instance); see the module docstring.

    Nothing is started until :meth:`run` is first called (a rerun with nothing to do starts
    no Ray); :meth:`close` shuts down the Ray instance this executor started, if any.

    Args:
        address: '' for `ray.init()`'s default (`$RAY_ADDRESS`, else the cluster started last
            on this host, else a new local instance), or 'ray://host:port'. A Ray already
            initialized in this process (a test's `ray.init(num_cpus=2)`) is used as it is.
        model / name / device: the checkpoint the actors load, its label, and 'auto', 'cpu'
            or 'cuda[:N]' (an actor given a GPU uses that one, whatever N).
        batch_size: images per model forward pass, per actor call and per download task.
        download: the download settings; `workers` bounds the requests in flight.
        image_dir: the image cache (the store's), seen by every node at this path.

    Attributes:
        window: photos per dataset (:data:`WINDOW_PHOTOS`).
        description: what runs the work, for the log.
    """

    def __init__(
        self,
        address: str,
        *,
        model: str,
        name: str,
        device: str,
        batch_size: int,
        download: DownloadOptions,
        image_dir: str | os.PathLike,
    ):
        self.address = address
        self.model, self.name, self.device, self.batch_size = model, name, device, batch_size
        self.download = download
        self.image_dir = Path(image_dir)
        self.window = WINDOW_PHOTOS
        self.description = f"Ray ({address or 'local or $RAY_ADDRESS'})"
        self._started = False
        self._connected = False
        self._actors: dict[str, Any] = {}

    def _connect(self) -> None:
        """Join (or start) Ray, size the actor pool, and check that every node sees the cache.

        Raises:
            ExecutorError: Ray cannot be reached, a node does not see the image cache, or
                device cuda was asked for on a cluster without GPUs.
        """
        if self._connected:
            return
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address or None,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except Exception as exc:  # noqa: BLE001 - any failure to join is the executor's
                raise ExecutorError(f"cannot start or join Ray ({self.address or 'local'}): {exc}") from exc
            self._started = True
        self._connected = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        if self.device.startswith("cuda") and gpus == 0:
            raise ExecutorError(f"device {self.device} asked for, but the Ray cluster has no GPU")
        if gpus and self.device != "cpu":
            # Ray shows an actor its own GPU only (as cuda:0): 'cuda:N' means a GPU there.
            self._actors = dict(concurrency=gpus, num_gpus=1, num_cpus=1, threads=0, device="cuda")
        else:
            actors = max(1, int(cpus // CPU_THREADS_PER_ACTOR))
            threads = max(1, int(cpus // actors))
            self._actors = dict(concurrency=actors, num_gpus=0, num_cpus=1, threads=threads, device=self.device)
        log.info(
            "Ray: %g CPUs, %d GPUs; %d embedding actor(s)%s",
            cpus,
            gpus,
            self._actors["concurrency"],
            " with a GPU each" if self._actors["num_gpus"] else f" of {self._actors['threads']} threads",
        )
        self._check_cache()

    def _check_cache(self) -> None:
        """Every node with CPUs sees the image cache at this path (a file written here)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.image_dir.mkdir(parents=True, exist_ok=True)
        # Named like a download's temporary file: a run killed here leaves nothing a later one keeps.
        fd, probe = tempfile.mkstemp(dir=self.image_dir, prefix=".ray-probe.", suffix=TEMP_SUFFIX)
        os.close(fd)
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            checks = [
                _exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    probe
                )
                for n in nodes
            ]
            blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, seen in zip(nodes, ray.get(checks)) if not seen]
        finally:
            Path(probe).unlink(missing_ok=True)
        if blind:
            raise ExecutorError(
                f"Ray node(s) {', '.join(blind)} do not see the image cache {self.image_dir}: with "
                "--executor ray the store directory must be at the same path on every node (a shared file system)"
            )

    def run(
        self, photos: Sequence[tuple[str, str]], embed: set[str], *, allow_local_files: bool = False
    ) -> Iterator[RayBatch]:
        """Download the photos (photo_id, url) into the cache, embed those in `embed` that
        were fetched (or found cached), and yield the results a batch at a time as they come.

        Raises:
            ExecutorError: see :meth:`_connect`.
            StoreError: a download task found the image cache unwritable (disk full, read-only).
        """
        if not photos:
            return
        self._connect()
        table = pa.table(
            {
                "photo_id": pa.array([p for p, _ in photos], pa.string()),
                "url": pa.array([u for _, u in photos], pa.string()),
                "embed": pa.array([p in embed for p, _ in photos], pa.bool_()),
            }
        )
        spec = dict(
            image_dir=str(self.image_dir),
            download=self.download,
            allow_local_files=allow_local_files,
            batch_size=self.batch_size,
            model=self.model,
            name=self.name,
            actors=self._actors,
        )
        # The dataset runs in an actor on the cluster, which hands its blocks out one at a time:
        # through Ray Client (ray://) this process cannot run Ray Data's executor itself.
        pipeline = _PIPELINE.remote(table, spec)
        try:
            while (block := ray.get(pipeline.next.remote())) is not None:
                yield _batch_of(block, self.image_dir)
        finally:
            ray.kill(pipeline)

    def close(self) -> None:
        """Shut down the Ray instance this executor started (one it joined is left running)."""
        if self._started:
            ray.shutdown()
            self._started = False
        self._connected = False


@ray.remote(num_cpus=0)
def _exists(path: str) -> bool:
    return os.path.exists(path)


def _dataset(table: pa.Table, spec: dict) -> ray.data.Dataset:
    """The pipeline over `table` (photo_id, url, embed): download tasks, then the embedding
    actors (see the module docstring); `spec` as :meth:`RayExecutor.run` builds it."""
    rows = spec["batch_size"]  # one download task per model batch
    download: DownloadOptions = spec["download"]
    threads = max(1, min(download.workers, rows))
    actors = spec["actors"]
    dataset: ray.data.Dataset = ray.data.from_arrow(
        [table.slice(start, rows) for start in range(0, table.num_rows, rows)]
    )
    dataset = dataset.map_batches(
        functools.partial(
            _download_batch,
            image_dir=spec["image_dir"],
            options=dataclasses.replace(download, workers=threads),
            allow_local_files=spec["allow_local_files"],
        ),
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=max(1, math.ceil(download.workers / threads))),
        # Half a CPU: a download task mostly waits on the network. The figure also keeps the
        # downloads in tasks of their own, out of the embedding actors: Ray Data fuses a map
        # into the next one only when they ask for the same resources. (A task whose worker
        # died is run again: Ray Data's default, max_retries=-1.)
        num_cpus=DOWNLOAD_TASK_CPUS,
    )
    return dataset.map_batches(
        _EmbedActor,
        batch_size=rows,
        batch_format="pyarrow",
        fn_constructor_kwargs=dict(
            model=spec["model"],
            name=spec["name"],
            device=actors["device"],
            batch_size=rows,
            image_dir=spec["image_dir"],
            threads=actors["threads"],
        ),
        compute=ray.data.ActorPoolStrategy(size=actors["concurrency"]),
        num_cpus=actors["num_cpus"],
        num_gpus=actors["num_gpus"] or None,
    )


class _Pipeline:
    """Runs one dataset (:func:`_dataset`) in a thread of its own and hands its blocks out one
    call of :meth:`next` at a time, at most :data:`PIPELINE_BLOCKS` ahead (bounded memory):
    Ray Data's executor cannot run in a Ray Client process, an actor of the cluster can."""

    def __init__(self, table: pa.Table, spec: dict):
        self._blocks: queue.Queue = queue.Queue(maxsize=PIPELINE_BLOCKS)
        threading.Thread(target=self._run, args=(table, spec), name="clipsql-pipeline", daemon=True).start()

    def _run(self, table: pa.Table, spec: dict) -> None:
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the refresh has its own bars, per photo
            context.print_on_execution_start = False
            for block in _dataset(table, spec).iter_batches(batch_size=None, batch_format="pyarrow"):
                self._blocks.put(block)
            self._blocks.put(None)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller, by next()
            self._blocks.put(exc)

    def next(self) -> pa.Table | None:
        """The next block of results; None once the dataset is done.

        Raises:
            What the dataset raised (a download task's StoreError, an actor's ModelError ...).
        """
        item = self._blocks.get()
        if isinstance(item, BaseException):
            raise item
        return item


#: The pipeline as a Ray actor class: no CPU of its own; not restarted (its dataset's state
#: dies with it; the refresh then fails, and its rerun does what is missing).
_PIPELINE: Any = ray.remote(num_cpus=0, max_restarts=0)(_Pipeline)


#: Columns a download task adds (DownloadResult's fields, and the task's seconds per photo).
_RESULT_COLUMNS = {
    "status": pa.string(),
    "reason": pa.string(),
    "detail": pa.string(),
    "http_status": pa.int64(),
    "bytes": pa.int64(),
    "width": pa.int64(),
    "height": pa.int64(),
    "cached": pa.bool_(),
}


def _download_batch(batch: pa.Table, *, image_dir: str, options: DownloadOptions, allow_local_files: bool) -> pa.Table:
    """A download task: the batch's images fetched into the cache (download_photos), one
    result column per DownloadResult field, and `download_s`, the task's seconds per photo.
    Stale temporary files are not removed here: other tasks write into the cache meanwhile."""
    started = time.perf_counter()
    photos = list(zip(batch["photo_id"].to_pylist(), batch["url"].to_pylist()))
    results = download_photos(
        photos, image_dir, options, progress=False, allow_local_files=allow_local_files, remove_stale=False
    )
    for name, kind in _RESULT_COLUMNS.items():
        batch = batch.append_column(name, pa.array([getattr(r, name) for r in results], kind))
    seconds = (time.perf_counter() - started) / max(len(photos), 1)
    return batch.append_column("download_s", pa.array([seconds] * len(photos), pa.float64()))


class _EmbedActor:
    """An embedding actor: the model loaded once; each call embeds the photos of its batch that
    were fetched and need a vector, and adds `embedding` (null where none), `embed_reason`,
    `embed_detail` (the embed stage's failures) and `embed_s` (seconds per photo)."""

    def __init__(self, *, model: str, name: str, device: str, batch_size: int, image_dir: str, threads: int):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.embedder = Embedder(model, device=device, name=name, progress=False, towers="image")
        self.batch_size = batch_size
        self.image_dir = Path(image_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        ids = batch["photo_id"].to_pylist()
        todo = [
            (photo_id, image_path(self.image_dir, photo_id))
            for photo_id, status, wanted in zip(ids, batch["status"].to_pylist(), batch["embed"].to_pylist())
            if status == "ok" and wanted
        ]
        vectors: dict[str, list[float]] = {}
        failures: dict[str, tuple[str, str]] = {}
        # One call is one batch: Ray runs many of these actors; no decode processes inside one.
        for out in embed_photos(todo, self.embedder, batch_size=self.batch_size, progress=False, decode_workers=0):
            vectors.update(zip(out.photo_ids, out.embeddings.tolist()))
            failures.update((photo_id, (reason, detail)) for photo_id, reason, detail in out.failures)
        seconds = (time.perf_counter() - started) / max(len(ids), 1)
        columns = {
            "embedding": pa.array([vectors.get(p) for p in ids], pa.list_(pa.float32())),
            "embed_reason": pa.array([failures.get(p, (None, None))[0] for p in ids], pa.string()),
            "embed_detail": pa.array([failures.get(p, (None, None))[1] for p in ids], pa.string()),
            "embed_s": pa.array([seconds] * len(ids), pa.float64()),
        }
        for name, values in columns.items():
            batch = batch.append_column(name, values)
        return batch


def _batch_of(block: pa.Table, image_dir: Path) -> RayBatch:
    """A block out of the pipeline as a :class:`RayBatch`."""
    rows = block.to_pydict()
    results = [
        DownloadResult(
            photo_id,
            url or "",
            status,
            path=str(image_path(image_dir, photo_id)) if status == "ok" else None,
            reason=reason,
            detail=detail,
            http_status=http_status,
            bytes=size or 0,
            width=width,
            height=height,
            cached=bool(cached),
        )
        for photo_id, url, status, reason, detail, http_status, size, width, height, cached in zip(
            rows["photo_id"],
            rows["url"],
            rows["status"],
            rows["reason"],
            rows["detail"],
            rows["http_status"],
            rows["bytes"],
            rows["width"],
            rows["height"],
            rows["cached"],
        )
    ]
    embedded = [(p, v) for p, v in zip(rows["photo_id"], rows["embedding"]) if v is not None]
    width = len(embedded[0][1]) if embedded else 0
    vectors = np.asarray([v for _, v in embedded], np.float32).reshape(len(embedded), width)
    failures = [
        (photo_id, reason, detail or "")
        for photo_id, reason, detail in zip(rows["photo_id"], rows["embed_reason"], rows["embed_detail"])
        if reason is not None
    ]
    return RayBatch(
        results,
        [p for p, _ in embedded],
        vectors,
        failures,
        float(sum(rows["download_s"])),
        float(sum(rows["embed_s"])),
    )
