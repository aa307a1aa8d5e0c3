"""Crash safety: `clipsql refresh` killed (SIGKILL) at random points, each kill followed by a
rerun, ends with the same tables and image cache as one clean run.

The store starts from a first release (10 photos, a 404, a 503). The second release drops
4 photos, adds 34, changes one photo's metadata. Its refresh runs as a subprocess of the
CLI (chunks of 4 photos) and is killed over and over: 2 times at a random moment of its
first 3 seconds (imports, migrations, model loading), then at random points of the
pipeline: after the t-th of its log lines for a random t, plus a random 0-50 ms (the
per-chunk lines come in the same order in every run, so t picks a place in the pipeline).
Once, with a run paused mid-way, a second refresh must exit at once naming it (the lock).
After every kill the store must hold no half-written image, no doubled key and no vector
without its photo; after the last, a run to the end must leave it equal to the clean run's.
Set CLIPSQL_KILL_SEED to replay a seed that failed.
"""

import logging
import os
import queue
import random
import re
import signal
import subprocess
import threading
import time

import pytest
from PIL import Image

from clipsql.cli import EXIT_LOCKED, main
from clipsql.db import open_store
from clipsql.download import DownloadOptions
from clipsql.lock import StoreLock
from clipsql.refresh import refresh
from etl_support import assert_same_tables, cli_command, photo_row, snapshot, subprocess_env, write_release

LINE_KILLS = 10
EARLY_KILLS = 2
CHUNK = 4
LOG_LINE = re.compile(r" INFO clipsql\.")


def release_rows(u):
    return [
        dict(photo_row(u, 0), photo_id="gone", photo_image_url=f"{u}/missing/a.jpg"),
        dict(photo_row(u, 0), photo_id="busy", photo_image_url=f"{u}/busy/a.jpg"),
    ]


def backend_of(kind, folder):
    return dict(store=folder, duckdb=str(folder) + ".duckdb" if kind == "duckdb" else None)


def check_invariants(backend, finished=False):
    """What must hold at any moment, killed run or not. A kill in the middle of a download
    leaves its temporary file (`.<photo_id>.<random>.tmp`): never a cache entry, removed by
    the next run; every file under a cache name decodes in full."""
    images = backend["store"] / "images"
    temporary = [p.name for p in images.glob(".*")]
    assert all(re.fullmatch(r"\.photo\d{4}\.[^.]+\.tmp", name) for name in temporary), temporary
    assert not (finished and temporary), f"temporary files outlived the run: {temporary}"
    for path in images.glob("[!.]*"):
        with Image.open(path) as im:
            im.load()
    with open_store(**backend) as db:
        q = db.query_clickhouse
        for table in ("photos", "download_status"):
            n = q(f"SELECT count() - count(DISTINCT photo_id) AS d FROM {table} FINAL")["d"].iloc[0]
            assert n == 0, f"{table} holds a key twice"
        orphans = q(
            "SELECT count() AS n FROM photo_embeddings FINAL WHERE photo_id NOT IN (SELECT photo_id FROM photos FINAL)"
        )["n"].iloc[0]
        assert orphans == 0, "a vector without its photo"
        # photo_search holds exactly the vectors of the photos not deleted, one row each.
        implied = q(
            "SELECT count() AS n FROM photo_embeddings FINAL "
            "WHERE photo_id IN (SELECT photo_id FROM photos FINAL WHERE is_deleted = 0)"
        )["n"].iloc[0]
        relation = q("SELECT count() AS n, count(DISTINCT model || '/' || photo_id) AS keys FROM photo_search")
        assert relation["n"].iloc[0] == relation["keys"].iloc[0] == implied, "photo_search disagrees with its tables"
        assert (
            q(
                "SELECT count() AS n FROM (SELECT model, photo_id FROM photo_embeddings FINAL "
                "GROUP BY model, photo_id HAVING count() > 1) AS d"
            )["n"].iloc[0]
            == 0
        )


class Run:
    """A refresh subprocess whose clipsql log lines are counted as they come."""

    def __init__(self, args):
        self.proc = subprocess.Popen(
            cli_command(*args), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue = queue.Queue()
        self.tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.tail = (self.tail + [line])[-30:]
            if LOG_LINE.search(line):
                self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, number: int) -> bool:
        """Block until the number-th log line (True) or the end of the process (False)."""
        seen = 0
        while seen < number:
            if self.lines.get(timeout=120) is None:
                return False
            seen += 1
        return True

    def wait_for_text(self, text: str) -> bool:
        """Block until a log line containing `text` (True) or the end of the process (False)."""
        while (line := self.lines.get(timeout=120)) is not None:
            if text in line:
                return True
        return False

    def kill(self) -> bool:
        """SIGKILL; True if the process was still running."""
        running = self.proc.poll() is None
        if running:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        return running and self.proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["chdb", "duckdb"])
def test_refresh_killed_at_random_points_ends_like_a_clean_run(server, tmp_path, tiny_clip, kind, caplog, capsys):
    seed = int(os.environ.get("CLIPSQL_KILL_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    u = server.url
    release = tmp_path / "release"
    killed, clean = backend_of(kind, tmp_path / "killed"), backend_of(kind, tmp_path / "clean")
    go = dict(
        model=str(tiny_clip),
        download=DownloadOptions(workers=4, retries=0),
        progress=False,
        chunk_size=CHUNK,
        batch_size=CHUNK,
    )
    write_release(release, u, range(10), extra_rows=release_rows(u))
    for backend in (killed, clean):  # the same first state (chdb stores cannot be copied: absolute links)
        refresh(release, **go, **backend)

    write_release(release, u, range(4, 44), views={5: 123_456}, extra_rows=release_rows(u))
    with caplog.at_level(logging.INFO, logger="clipsql"):
        summary = refresh(release, **go, **clean, max_delete_fraction=0.5)  # 4 of 12 photos gone
    assert summary.deleted == 4 and summary.stage("embed").ok == 34
    lines_per_run = sum(r.name.startswith("clipsql.") and r.levelno == logging.INFO for r in caplog.records)
    assert lines_per_run > 3 * (40 // CHUNK)

    second = [
        "refresh",
        "--source",
        str(release),
        "--model",
        str(tiny_clip),
        "--store",
        str(killed["store"]),
        "--chunk-size",
        str(CHUNK),
        "--batch-size",
        str(CHUNK),
        "--workers",
        "4",
        "--retries",
        "0",
        "-q",
        "--max-delete-fraction",
        "0.5",
    ]
    second += ["--duckdb", killed["duckdb"]] if killed["duckdb"] else []
    args = second + ["-v"]
    kills, runs, points, lock_checked = 0, 0, [], False
    while kills < EARLY_KILLS + LINE_KILLS:
        runs += 1
        assert runs <= 3 * (EARLY_KILLS + LINE_KILLS), f"too few runs could be killed (seed {seed}): {points}"
        run = Run(args)
        if kills < EARLY_KILLS:
            point = f"{rng.uniform(0.2, 3.0):.2f} s"
            time.sleep(float(point.split()[0]))
        else:
            number = rng.randint(1, lines_per_run)
            point = f"line {number}"
            reached = run.wait_for_line(number)
            if reached and not lock_checked:
                # A second refresh meanwhile exits at once, naming this one (paused so that it
                # cannot end first; a paused process still holds its lock).
                run.proc.send_signal(signal.SIGSTOP)
                holder = StoreLock.holder(killed["store"])
                if holder is not None and holder.pid == run.proc.pid:
                    assert main(second) == EXIT_LOCKED
                    assert f"pid {run.proc.pid} on host" in capsys.readouterr().err
                    lock_checked = True
                run.proc.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0, 0.05))
        if run.kill():
            kills += 1
            points.append(point)
        else:
            assert run.proc.returncode == 0, f"seed {seed}: run ended with {run.proc.returncode}:\n{''.join(run.tail)}"
            points.append(f"{point} (ended first)")
        try:
            check_invariants(killed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, after kills at {points}: {exc}") from exc

    assert lock_checked, f"no run was caught holding the lock (seed {seed}): {points}"
    final = Run(args)
    assert final.proc.wait(timeout=300) == 0, f"seed {seed}, kills at {points}:\n{''.join(final.tail)}"
    check_invariants(killed, finished=True)
    got, want = snapshot(killed), snapshot(clean)
    assert_same_tables(got, want)
    assert sorted(p.name for p in (killed["store"] / "images").iterdir()) == sorted(
        p.name for p in (clean["store"] / "images").iterdir()
    )
    statuses = got["runs"]["status"].tolist()
    assert statuses[-1] == "ok" and "running" not in statuses
    # Every run killed after its first log line had written its row (early kills may precede it):
    # 'interrupted', or 'ok' when the kill came after its end-of-run row.
    assert len(statuses) >= 1 + LINE_KILLS + 1 and set(statuses) == {"ok", "interrupted"}, (seed, points, statuses)


def test_sigterm_ends_the_run_as_interrupted_and_the_next_run_completes_it(server, tmp_path, tiny_clip):
    # systemd and Airflow stop a job with SIGTERM: exit 130, the run logged 'interrupted',
    # the invariants hold, and a rerun finishes the work.
    u = server.url
    release = tmp_path / "release"
    write_release(release, u, range(40), extra_rows=release_rows(u))
    backend = backend_of("chdb", tmp_path / "store")
    args = [
        "refresh",
        "--source",
        str(release),
        "--model",
        str(tiny_clip),
        "--store",
        str(backend["store"]),
        "--chunk-size",
        str(CHUNK),
        "--batch-size",
        str(CHUNK),
        "--workers",
        "4",
        "--retries",
        "0",
        "-q",
        "-v",
    ]
    run = Run(args)
    # Mid-pipeline, a few chunks in (counting lines would count the migrations of a new store).
    assert run.wait_for_text("chunk 2: "), "".join(run.tail)
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=60) == 130, "".join(run.tail)
    check_invariants(backend)
    with open_store(**backend) as db:
        assert db.query_df("SELECT status FROM etl_runs FINAL")["status"].tolist() == ["interrupted"]
    assert Run(args).proc.wait(timeout=300) == 0
    check_invariants(backend, finished=True)
    with open_store(**backend) as db:
        statuses = db.query_df("SELECT status FROM etl_runs FINAL ORDER BY started_at")["status"].tolist()
        assert statuses == ["interrupted", "ok"]
        assert db.count("photo_embeddings") == 40
