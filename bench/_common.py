"""Helpers of the benchmark scripts: where the real photos are, and a loopback mirror."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "unsplash-lite-7k"


def require_photos() -> Path:
    if not (SHARED_PHOTOS / "photos").is_dir():
        sys.exit(f"benchmark needs the real photos at {SHARED_PHOTOS}")
    return SHARED_PHOTOS


@contextlib.contextmanager
def mirror(directory: Path):
    """`python -m http.server` on a free loopback port, in its own process (as a real server is)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()
