"""The store's refresh lock: at most one `clipsql refresh` per store at a time.

Public entry point: :class:`StoreLock`, used as a context manager by the refresh.

The lock is `fcntl.flock` on `<store>/refresh.lock`. The kernel drops a flock when its
holder dies, however it dies (kill -9 included), so a lock left by a killed run is free
for the next run: a stale lock is taken over without any guessing. The file also holds
who took the lock (pid, host, start time, command line) as one JSON object, so a second
refresh can say who holds it, and a run that takes over a lock its predecessor never
released can say whose it was. The file is never deleted (deleting a flock'ed file lets two
processes lock two different files of the same name); a clean release empties it.

The lock is per store directory: for a ClickHouse server shared by several machines, run
the refresh from one store directory (one host). On NFS, Linux emulates flock with POSIX
byte-range locks, which NFSv4 servers honour across hosts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from .errors import StoreBusy, StoreError

log = logging.getLogger(__name__)

LOCK_NAME = "refresh.lock"
#: How long a second process waits for the holder's details to appear in a just-taken lock
#: file (the holder writes them right after taking the lock), seconds.
_HOLDER_WAIT_S = 0.5


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who took a store's lock: `pid` on `host`, at `started_at` (ISO 8601, UTC), running `command`."""

    pid: int
    host: str
    started_at: str
    command: str = ""

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started_at}"

    @property
    def local(self) -> bool:
        """Whether the holder ran on this host (only then can its pid be checked)."""
        return self.host == socket.gethostname()

    def alive(self) -> bool | None:
        """Whether the holder's process still runs: True/False on this host, None elsewhere."""
        if not self.local:
            return None
        return pid_alive(self.pid)


class StoreLocked(StoreBusy):
    """Another refresh holds the store's lock; `holder` says who (None if it cannot be read)."""

    def __init__(self, path: Path, holder: LockHolder | None, hint: str = ""):
        who = str(holder) if holder else "a process whose details could not be read"
        note = ""
        if holder is not None and holder.alive() is False:
            note = f" (pid {holder.pid} no longer runs; a child process it started may still hold the lock open)"
        super().__init__(
            f"another refresh is running on this store: {who}{note}; lock file {path}{hint}",
            path=path,
            pid=holder.pid if holder else None,
            command=holder.command if holder else "",
        )
        self.holder = holder


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 probe)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_holder(fd: int) -> LockHolder | None:
    raw = os.pread(fd, 64 * 1024, 0)
    if not raw.strip():
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started_at"]), str(data.get("command", "")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        log.warning("lock file holds unreadable details: %r", raw[:200])
        return None


class StoreLock:
    """The refresh lock of the store directory `root` (created if missing).

    Use as `with StoreLock(root) as lock: ...`. Taking it never waits: if another process
    holds it, :class:`StoreLocked` is raised at once, naming the holder.

    Attributes:
        path: the lock file, `<root>/refresh.lock`.
        previous: the holder recorded by a run that never released the lock (killed), if
            this lock took it over; None otherwise.
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK_NAME
        self.previous: LockHolder | None = None
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreLocked`; a stale lock is taken over.

        Raises:
            StoreLocked: another live process holds the lock.
            StoreError: the lock file cannot be created (e.g. a read-only store directory).
        """
        if self._fd is not None:
            raise StoreError(f"{self.path} is already held by this StoreLock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            holder = _read_holder(fd)
            deadline = time.monotonic() + _HOLDER_WAIT_S
            while holder is None and time.monotonic() < deadline:  # the holder is writing its details
                time.sleep(0.02)
                holder = _read_holder(fd)
            os.close(fd)
            raise StoreLocked(self.path, holder) from None
        self.previous = _read_holder(fd)
        if self.previous is not None:
            state = {True: "still runs (pid reused?)", False: "no longer runs", None: "ran on another host"}
            log.warning(
                "taking over the refresh lock of %s, which ended without releasing it; that process %s",
                self.previous,
                state[self.previous.alive()],
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:1000],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    @staticmethod
    def holder(root: str | os.PathLike) -> LockHolder | None:
        """Who holds the lock of store `root` now, or None when nobody does."""
        path = Path(root) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read_holder(fd) or LockHolder(0, "?", "?")
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
