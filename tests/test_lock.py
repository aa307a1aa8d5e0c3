"""The store's refresh lock: a second refresh exits at once naming the holder; a lock left by a
killed process is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from clipsql.cli import EXIT_LOCKED, main
from clipsql.lock import LOCK_NAME, StoreLock, StoreLocked
from clipsql.refresh import refresh
from etl_support import subprocess_env

HOLD = (
    "import sys; from clipsql.lock import StoreLock; lock = StoreLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/'store' until its stdin closes."""
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store)],
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    yield store, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_refresh_exits_at_once_naming_the_holder(holder, tmp_path, capsys):
    store, proc = holder
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()  # a CLIP config without weights: loading it would fail with exit status 2,
    (not_a_model / "config.json").write_text('{"model_type": "clip"}')  # so 75 shows the lock came first
    code = main(
        ["refresh", "--source", str(tmp_path / "nothing"), "--model", str(not_a_model), "--store", str(store), "-q"]
    )
    assert code == EXIT_LOCKED == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"pid {proc.pid} on host {socket.gethostname()}, started 20" in err
    assert "another refresh is running" in err and str(store / LOCK_NAME) in err
    with pytest.raises(StoreLocked) as info:
        refresh(tmp_path / "nothing", model=str(not_a_model), store=store, progress=False)
    assert info.value.holder.pid == proc.pid and info.value.holder.alive() is True
    assert StoreLock.holder(store).pid == proc.pid

    # status reads the store while a refresh runs (the refresh holds the engine only while it
    # reads or writes), and says that one runs.
    (store / "chdb").mkdir()
    assert main(["status", "--store", str(store), "--wait", "0"]) == 0
    assert f"a refresh is running: pid {proc.pid}" in capsys.readouterr().out


def test_a_lock_left_by_a_killed_process_is_taken_over(holder):
    store, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert StoreLock.holder(store) is None  # the kernel dropped the flock with the process
    with StoreLock(store) as lock:
        assert lock.previous is not None and lock.previous.pid == proc.pid
        assert lock.previous.alive() is False
        written = json.loads((store / LOCK_NAME).read_text())
        assert written["pid"] == os.getpid() and written["host"] == socket.gethostname()
        assert StoreLock.holder(store).pid == os.getpid()
        with pytest.raises(StoreLocked):  # within one process, a second lock is refused too
            StoreLock(store).acquire()
    assert (store / LOCK_NAME).read_text() == ""  # a clean release leaves no holder behind
    with StoreLock(store) as again:
        assert again.previous is None


def test_a_lock_file_naming_a_dead_pid_but_not_locked_is_free(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (store / LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started_at": "2025-01-01T03:17:00+00:00"})
    )
    with StoreLock(store) as lock:
        assert lock.previous.pid == dead.pid and lock.previous.started_at.startswith("2025-01-01")
