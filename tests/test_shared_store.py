"""One store, three users at once (issue 12), with real processes: chdb and DuckDB let one
process open a store at a time, so a store object holds the engine only while it works,
lets go of it when idle and another process waits, and every command waits (boundedly) for
a store another process holds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import searchdata
from clipsql.db import open_store
from clipsql.unrecorded import runs_file
from etl_support import cli_command, subprocess_env

N = 60


def _env() -> dict:
    return dict(subprocess_env(), TRANSFORMERS_VERBOSITY="error")


@pytest.fixture(params=["chdb", "duckdb"])
def store(request, tmp_path, tiny_clip) -> list[str]:
    """A store with N photos and vectors of the tiny model: its --store options."""
    root = tmp_path / "store"
    options = (
        ["--store", str(root)]
        if request.param == "chdb"
        else ["--store", str(root), "--duckdb", str(tmp_path / "s.duckdb")]
    )
    with open_store(root, duckdb=None if request.param == "chdb" else str(tmp_path / "s.duckdb")) as db:
        searchdata.load(db, N, model_source=str(tiny_clip))
    return options


def _python(code: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _backend_code(options: list[str]) -> str:
    """Python keywords of open_store for the --store options."""
    kw = {"store": options[1]}
    if "--duckdb" in options:
        kw["duckdb"] = options[options.index("--duckdb") + 1]
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


#: Holds the engine in a session block until a line arrives on stdin, then exits.
HOLD = (
    "from clipsql.db import open_store\n"
    "db = open_store({backend})\n"
    "with db.session():\n"
    "    print('held', flush=True)\n"
    "    input()\n"
)
#: A notebook kernel: opens the store, searches, then sits idle (holding the store object),
#: then searches again when told; prints the result counts.
NOTEBOOK = (
    "import sys\n"
    "from clipsql.db import open_store\n"
    "from clipsql import search\n"
    "db = open_store({backend})\n"
    "print(len(search.similar('p0001', 3, db=db)), flush=True)\n"
    "input()\n"
    "print(len(search.similar('p0002', 3, db=db)), db.connections, flush=True)\n"
)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), env=_env(), capture_output=True, text=True, timeout=timeout)


def test_a_command_waits_for_a_busy_store_says_for_whom_and_runs(store):
    holder = _python(HOLD.format(backend=_backend_code(store)))
    try:
        assert holder.stdout.readline().strip() == "held"
        search = subprocess.Popen(
            cli_command("search", "similar", "p0001", "-k", "3", "--format", "json", "--wait", "60", *store),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # the search is waiting now
        assert search.poll() is None
        holder.stdin.write("\n")
        holder.stdin.flush()
        out, err = search.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert search.returncode == 0, err
    assert len(json.loads(out)) == 3
    waiting = [line for line in err.splitlines() if "waiting up to 60 s for" in line]
    assert len(waiting) == 1 and f"held by pid {holder.pid}" in waiting[0], err


def test_a_wait_that_runs_out_exits_75_and_wait_0_fails_at_once(store):
    holder = _python(HOLD.format(backend=_backend_code(store)))
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        done = _cli("status", "--wait", "0", *store)
        assert done.returncode == 75 and done.stderr.count("\n") == 1, done.stderr
        assert f"is busy: held by pid {holder.pid}" in done.stderr
        done = _cli("search", "similar", "p0001", "--wait", "1.5", *store)
        assert done.returncode == 75, done.stderr
        assert "(waited 1.5 s)" in done.stderr.splitlines()[-1]
        assert time.monotonic() - started < 60
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_an_idle_notebook_does_not_block_the_store_and_keeps_working(store):
    kernel = _python(NOTEBOOK.format(backend=_backend_code(store)))
    try:
        assert kernel.stdout.readline().strip() == "3"
        # The kernel sits idle with its store object; a refresh-like writer and a status get in.
        started = time.monotonic()
        done = _cli("status", "--wait", "60", *store)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 30  # let go within a poll, not after the 30 s idle limit
        kernel.stdin.write("\n")
        kernel.stdin.flush()
        out, err = kernel.communicate(timeout=120)
    finally:
        kernel.kill()
        kernel.wait(timeout=30)
    found, connections = out.split()
    assert found == "3", err
    assert int(connections) == 2  # it let go for the status and connected again for the search


def test_a_reader_killed_while_it_holds_the_engine_leaves_the_store_usable(store):
    holder = _python(HOLD.format(backend=_backend_code(store)))
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    done = _cli("search", "similar", "p0001", "-k", "2", "--format", "json", "--wait", "0", *store)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2


def test_several_readers_at_once_all_succeed(store):
    commands = [
        cli_command("search", "similar", "p0001", "-k", "3", "--format", "json", *store),
        cli_command("search", "similar", "p0002", "-k", "3", "--format", "json", *store),
        cli_command("status", *store),
    ]
    procs = [
        subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    kernel = _python(NOTEBOOK.format(backend=_backend_code(store)))
    try:
        results = [p.communicate(timeout=180) + (p.returncode,) for p in procs]
        assert kernel.stdout.readline().strip() == "3"
        kernel.stdin.write("\n")
        kernel.stdin.flush()
        out, err = kernel.communicate(timeout=120)
    finally:
        for p in [*procs, kernel]:
            p.kill()
            p.wait(timeout=30)
    for _, err_, code in results:
        assert code == 0, err_
    assert out.split()[0] == "3", err


def test_a_night_that_cannot_get_the_store_is_on_record(store, tmp_path, tiny_clip):
    from conftest import make_release

    release = make_release(tmp_path / "release", "http://127.0.0.1:9/never", 3)
    holder = _python(HOLD.format(backend=_backend_code(store)))
    try:
        assert holder.stdout.readline().strip() == "held"
        done = _cli("refresh", "--source", str(release), "--model", str(tiny_clip), "-q", "--wait", "1", *store)
        assert done.returncode == 75, done.stderr
    finally:
        holder.kill()
        holder.wait(timeout=30)
    root = Path(store[1])
    lines = runs_file(root).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "failed"
    done = _cli("status", *store)
    assert done.returncode == 0, done.stderr
    assert "1 run(s) could not get the store" in done.stdout and "StoreBusy" in done.stdout
    # The next refresh gets the store and writes the failed night into etl_runs.
    done = _cli(
        "refresh", "--source", str(release), "--model", str(tiny_clip), "-q", "--retries", "0", "--limit", "3", *store
    )
    assert done.returncode == 0, done.stderr
    assert not runs_file(root).exists()
    backend = {"store": root}
    if "--duckdb" in store:
        backend["duckdb"] = store[store.index("--duckdb") + 1]
    with open_store(**backend) as db:
        runs = db.query_clickhouse("SELECT status, error FROM etl_runs FINAL ORDER BY started_at")
    assert runs["status"].tolist() == ["failed", "ok"]
    assert runs["error"].iloc[0].startswith("StoreBusy: store")
