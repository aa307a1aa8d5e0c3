"""A refresh shares the store while it runs (issue 12): it holds the engine only for its reads
and writes, so another process reading the store in a loop gets in between them, and a refresh
killed while another process reads the store leaves it consistent for the next run.
Real processes; chdb (one process per store) and DuckDB (one per file)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from clipsql.db import open_store
from conftest import make_release
from etl_support import cli_command, subprocess_env

#: Reads the store in a loop (a fresh store object each time, as a command would) until the
#: file named by argv[2] exists; prints one JSON list of [seconds, photos] per read.
READER = (
    "import json, os, sys, time\n"
    "from clipsql.db import open_store\n"
    "kw = json.loads(sys.argv[1])\n"
    "reads = []\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    t0 = time.monotonic()\n"
    "    with open_store(wait_s=120, **kw) as db:\n"
    "        n = db.count('photo_embeddings')\n"
    "    reads.append([time.monotonic() - t0, n])\n"
    "    time.sleep(0.2)\n"
    "print(json.dumps(reads), flush=True)\n"
)


def _env() -> dict:
    return dict(subprocess_env(), TRANSFORMERS_VERBOSITY="error")


@pytest.fixture(params=["chdb", "duckdb"])
def backend(request, tmp_path) -> dict:
    store = tmp_path / "store"
    return dict(store=str(store), **({"duckdb": str(tmp_path / "s.duckdb")} if request.param == "duckdb" else {}))


def _options(backend: dict) -> list[str]:
    out = ["--store", backend["store"]]
    return out + (["--duckdb", backend["duckdb"]] if "duckdb" in backend else [])


def _start_reader(backend: dict, stop) -> subprocess.Popen:
    """Create the store, then start READER on it (it reads until `stop` exists)."""
    with open_store(**backend):
        pass
    return subprocess.Popen(
        [sys.executable, "-c", READER, json.dumps(backend), str(stop)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _refresh_command(release, tiny_clip, backend: dict) -> list[str]:
    """One download at a time, small chunks and batches: many write phases with gaps between."""
    return cli_command(
        "refresh", "--source", str(release), "--model", str(tiny_clip), "-q", "--workers", "1",
        "--chunk-size", "4", "--batch-size", "2", "--timeout", "10", *_options(backend),
    )  # fmt: skip


def test_a_reader_in_a_loop_gets_in_while_a_refresh_runs(image_server, tmp_path, tiny_clip, backend):
    # Slow images (3 s each, one download at a time) keep the refresh busy outside the store
    # for most of its run; its writes come in between.
    slow = [{"photo_id": f"slow{i}", "photo_image_url": f"{image_server.url}/slow.jpg"} for i in range(4)]
    release = make_release(tmp_path / "release", image_server.url, 8, extra_rows=slow)
    stop = tmp_path / "stop"
    reader = _start_reader(backend, stop)
    try:
        time.sleep(2)  # the reader is reading
        refresh = subprocess.run(
            _refresh_command(release, tiny_clip, backend),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        stop.touch()
        out, err = reader.communicate(timeout=180)
    finally:
        reader.kill()
        reader.wait(timeout=30)
    assert refresh.returncode == 0, refresh.stderr
    assert reader.returncode == 0, err
    reads = json.loads(out)
    during = [r for r in reads if 0 < r[1] < 12]  # reads that saw the refresh half done
    assert len(reads) >= 10 and during, reads
    # No read waited longer than one of the refresh's write phases takes (generous on a busy machine).
    assert max(seconds for seconds, _ in reads) < 20, reads
    with open_store(**backend) as db:
        assert db.count("photos") == 12 and db.count("photo_embeddings") == 12


def test_a_refresh_killed_while_another_process_reads_leaves_the_store_consistent(
    image_server, tmp_path, tiny_clip, backend
):
    slow = [{"photo_id": f"slow{i}", "photo_image_url": f"{image_server.url}/slow.jpg"} for i in range(3)]
    release = make_release(tmp_path / "release", image_server.url, 8, extra_rows=slow)
    stop = tmp_path / "stop"
    reader = _start_reader(backend, stop)
    command = _refresh_command(release, tiny_clip, backend)
    try:
        first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # mid-run: some chunks written, a slow download under way
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        again = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
        stop.touch()
        out, err = reader.communicate(timeout=180)
    finally:
        reader.kill()
        reader.wait(timeout=30)
    assert again.returncode == 0, again.stderr
    assert reader.returncode == 0, err
    assert json.loads(out), "the reader read while the refresh ran and after the kill"
    with open_store(**backend) as db:
        assert db.count("photos") == 11 and db.count("photo_embeddings") == 11
        runs = db.query_clickhouse("SELECT status FROM etl_runs FINAL ORDER BY started_at")["status"].tolist()
    assert runs == ["interrupted", "ok"]
