"""Telling who holds a store that is busy: one process per chdb data path and per DuckDB
file. Shared by the engines that have that rule (:attr:`Capabilities.one_process`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreBusy


def posix_lock_holder(path: Path) -> int | None:
    """The pid of the process holding a POSIX (fcntl) lock on `path` (DuckDB locks its file
    so), read from Linux's /proc/locks by the file's device and inode; 0 when a lock is
    held by a process that cannot be told; None when no lock is held (or not on Linux)."""
    try:
        st = path.stat()
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 22747 fe:00:2148082 0 EOF" (a "->" marks a waiter)
        if len(fields) >= 6 and fields[1] == "POSIX" and "->" not in fields:
            inode = fields[5].rsplit(":", 1)[-1]
            if inode.isdigit() and int(inode) == st.st_ino:
                return int(fields[4]) if fields[4].isdigit() else 0
    return None


def store_busy(where: object, path: object, pid: int | None, root: Path) -> StoreBusy:
    """The StoreBusy error of a store another process holds: its pid and, when readable, its
    command line (/proc/<pid>/cmdline, or the refresh lock file of the store)."""
    who, command = describe_holder(pid, root)
    return StoreBusy(
        f"store {where} is busy: held by {who}; try again when it ends", path=path, pid=pid, command=command
    )


def describe_holder(pid: int | None, root: Path) -> tuple[str, str]:
    """(who, command) of the process `pid` holding a store: e.g. ('pid 123 (clipsql search
    text beach)', 'clipsql search text beach'); command '' when it cannot be read."""
    from ..lock import StoreLock

    argv: list[str] = []
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            pass
    refresh = StoreLock.holder(root)  # a refresh records itself in <store>/refresh.lock
    if not argv and refresh is not None and refresh.pid == pid and refresh.command:
        argv = refresh.command.split()
    if argv:  # `python -m clipsql.cli ARGS` and `.../bin/clipsql ARGS` both shown as `clipsql ARGS`
        argv[0] = os.path.basename(argv[0])
        if argv[0].startswith("python") and argv[1:3] == ["-m", "clipsql.cli"]:
            argv = argv[2:]
        elif argv[0].startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
            argv = argv[1:]
        if os.path.basename(argv[0]) in ("clipsql", "cli.py", "clipsql.cli"):
            argv = ["clipsql"] + argv[1:]
    command = " ".join(" ".join(argv).split())
    if len(command) > 160:
        command = command[:157] + "..."
    who = "another process" if pid is None else "this process" if pid == os.getpid() else f"pid {pid}"
    if command:
        who += f" ({command})"
    elif refresh is not None and refresh.pid == pid:
        who += f" (a refresh started {refresh.started_at})"
    return who, command
