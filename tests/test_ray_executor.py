"""`clipsql refresh --executor ray`: the download and embed stages on Ray Data (local mode, two
CPUs) leave the tables the local executor leaves, even when a download worker and the
embedding actor are SIGKILLed mid-run; a rerun does nothing. Skipped where Ray is not
installed (the `ray` extra: pip install 'clipsql[ray]')."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install 'clipsql[ray]'): the Ray executor is untested"
)

from clipsql import refresh  # noqa: E402
from clipsql.download import DownloadOptions  # noqa: E402
from conftest import make_release  # noqa: E402
from etl_support import assert_same_tables, snapshot  # noqa: E402

FAST = DownloadOptions(workers=8, retries=0, backoff_s=0.01, read_timeout_s=10.0)


@pytest.fixture(scope="module")
def local_ray():
    """Ray's local mode on two CPUs, for the module (starting it takes seconds). Its workers
    at normal priority (Ray's default is nice 15), as the test process is: on a machine busy
    with other jobs they would otherwise wait for the CPU far longer than the local run."""
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    finally:
        if niceness is None:
            os.environ.pop("RAY_worker_niceness")
        else:
            os.environ["RAY_worker_niceness"] = niceness
    yield
    ray.shutdown()


def ray_processes(title: str) -> list[int]:
    """Pids of this user's Ray workers whose process title starts with `ray::<title>`
    (Ray names a worker by the task or actor it runs)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if command.startswith(f"ray::{title}"):
                found.append(int(entry))
    return found


class Killer(threading.Thread):
    """SIGKILLs the download task workers once the image server has been asked for /slow.jpg
    (it answers after 3 s, so the task fetching it is still running), then the embedding
    actor as soon as it exists; notes whether the refresh was still going each time."""

    DOWNLOADS, ACTOR = "MapBatches(_download_batch)", "MapWorker(MapBatches(_EmbedActor))"

    def __init__(self, image_server, running: threading.Event):
        super().__init__(daemon=True)
        self.server, self.running = image_server, running
        self.killed: dict[str, list[int]] = {}
        self.mid_run: list[bool] = []

    def kill(self, title: str) -> bool:
        pids = ray_processes(title)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        if pids:
            self.killed[title] = pids
            self.mid_run.append(self.running.is_set())
        return bool(pids)

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while self.running.is_set() and time.monotonic() < deadline:
            if self.server.hits.get("/slow.jpg", 0) >= 2:  # the local run's, then the Ray run's
                time.sleep(0.5)
                self.kill(self.DOWNLOADS)
                break
            time.sleep(0.02)
        while self.running.is_set() and time.monotonic() < deadline and not self.kill(self.ACTOR):
            time.sleep(0.05)


def test_ray_executor_gives_the_local_tables_through_killed_workers(image_server, tmp_path, tiny_clip, local_ray):
    u = image_server.url
    release = make_release(
        tmp_path / "release",
        u,
        30,
        extra_rows=[
            {"photo_id": "slow", "photo_image_url": f"{u}/slow.jpg"},  # keeps a download task busy for 3 s
            {"photo_id": "broken", "photo_image_url": f"{u}/truncated.jpg"},
            {"photo_id": "gone", "photo_image_url": f"{u}/missing.jpg"},
        ],
    )
    local, on_ray = dict(store=tmp_path / "local"), dict(store=tmp_path / "ray")
    options = dict(model=str(tiny_clip), download=FAST, progress=False, batch_size=4)
    want = refresh(release, **local, **options)

    running = threading.Event()
    running.set()
    killer = Killer(image_server, running)
    killer.start()
    try:
        got = refresh(release, **on_ray, executor="ray", **options)
    finally:
        running.clear()
        killer.join()
    assert set(killer.killed) == {Killer.DOWNLOADS, Killer.ACTOR} and killer.mid_run == [True, True], killer.killed
    assert image_server.hits["/slow.jpg"] == 3  # the local run; the killed task; its retry
    for stage in ("source", "download", "embed"):
        assert (got.stage(stage).ok, got.stage(stage).failed) == (want.stage(stage).ok, want.stage(stage).failed)
    assert got.failures_by_reason == want.failures_by_reason == {"undecodable": 1, "http_4xx": 1}
    assert_same_tables(snapshot(on_ray), snapshot(local))

    # A rerun finds nothing to do: no request, no vector, and no Ray dataset at all.
    hits = sum(image_server.hits.values())
    again = refresh(release, **on_ray, executor="ray", **options)
    assert sum(image_server.hits.values()) == hits
    assert again.stage("embed").ok == 0 and again.stage("embed").skipped == 31
    assert_same_tables(snapshot(on_ray), snapshot(local))
