"""The download stage against servers, files and caches that misbehave.

Each test is bounded: deadlines of about 1 s, backoff 0.01 s, and every download_photos call
runs through `bounded()`, which fails the test (instead of hanging the suite) should a call
not return in time; the loopback server's fixture then stops every handler, which lets a
stuck client go. Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import errno
import http.server
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import urllib3.util.retry
from PIL import Image

import clipsql.download as download
from clipsql.download import DownloadOptions, download_photos, fetch_to_cache
from clipsql.errors import BadArgument, SourceError, StoreError
from conftest import jpeg_bytes

#: Short deadlines: 3 attempts of at most 1 s each, read timeout longer than the deadline (so
#: only the deadline can end a drip), no real backoff.
FAULTY = DownloadOptions(
    workers=6,
    retries=2,
    backoff_s=0.01,
    total_timeout_s=1.0,
    read_timeout_s=5.0,
    connect_timeout_s=1.0,
    max_bytes=1_000_000,
)
#: What DownloadOptions documents: (retries + 1) * total_timeout_s + the waits (0, then 0.02 s).
FAULTY_BOUND_S = 3 * 1.0 + 0.02


class FaultServer:
    """A loopback HTTP/1.1 server of misbehaviours (daemon threads; `stop()` ends them all).

    Routes: /img/<seed>.jpg (a valid JPEG); /drip-body.jpg (headers, then the body one byte
    per 0.2 s); /drip-headers.jpg (the status line, then header bytes one per 0.2 s);
    /stall.jpg (reads the request, never answers); /reset-once/<key>.jpg and /reset-always.jpg
    (half the body, then a TCP reset); /short-once/<key>.jpg (a Content-Length larger than
    what is sent, then the connection closed; good the second time); /retry-after-long.jpg
    (429 with Retry-After: 3600); /busy-once/<key>.jpg (503 with Retry-After: 1, then good);
    /to-file.jpg (302 to file:///etc/passwd).
    """

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def headers_for(self, status, length, ctype="image/jpeg", extra=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(length))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()

            def send_body(self, status, body, ctype="image/jpeg", extra=()):
                self.headers_for(status, len(body), ctype, extra)
                self.wfile.write(body)

            def drip(self, data: bytes):
                for i in range(len(data)):
                    if server.stopping.wait(0.2):
                        break
                    self.wfile.write(data[i : i + 1])
                self.close_connection = True

            def reset(self):
                """Abort the connection: SO_LINGER 0 makes the close send a TCP RST."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()  # the last file object's close (in finish()) resets it
                self.close_connection = True

            def do_GET(self):
                path = self.path.split("?")[0]
                with server.lock:
                    n = server.hits[path] = server.hits.get(path, 0) + 1
                    server.times.setdefault(path, []).append(time.monotonic())
                image = jpeg_bytes(5, (200, 150))
                try:
                    if path.startswith("/img/"):
                        self.send_body(200, jpeg_bytes(int(Path(path).stem)))
                    elif path == "/drip-body.jpg":
                        self.headers_for(200, len(image))
                        self.drip(image)
                    elif path == "/drip-headers.jpg":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        self.drip(b"X-Slow: " + b"a" * 10_000 + b"\r\n\r\n")
                    elif path == "/stall.jpg":
                        server.stopping.wait(60)
                        self.close_connection = True
                    elif path.startswith("/reset-once/") and n == 1 or path == "/reset-always.jpg":
                        self.headers_for(200, len(image))
                        self.wfile.write(image[: len(image) // 2])
                        time.sleep(0.2)  # the client is reading the body by now
                        self.reset()
                    elif path.startswith("/short-once/") and n == 1:
                        self.headers_for(200, len(image))
                        self.wfile.write(image[: len(image) // 2])
                        self.close_connection = True  # a clean close, short of Content-Length
                    elif path == "/retry-after-long.jpg":
                        self.send_body(429, b"come back in an hour", "text/plain", [("Retry-After", "3600")])
                    elif path.startswith("/busy-once/") and n == 1:
                        self.send_body(503, b"busy", "text/plain", [("Retry-After", "1")])
                    elif path == "/to-file.jpg":
                        self.send_body(302, b"", "text/plain", [("Location", "file:///etc/passwd")])
                    elif path.startswith(("/reset-once/", "/short-once/", "/busy-once/")):
                        self.send_body(200, image)
                    else:
                        self.send_body(404, b"no such route", "text/plain")
                except OSError:  # the client hung up (a deadline shut its socket down)
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def faults():
    server = FaultServer()
    yield server
    server.stop()


def bounded(seconds: float, fn, *args, **kwargs):
    """fn(*args, **kwargs) in a daemon thread: its value (or exception), or a test failure if
    it is still running after `seconds` (the code under test waited unboundedly)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def by_id(results):
    return {r.photo_id: r for r in results}


def test_slow_servers_end_at_the_deadline_while_other_photos_download(faults, tmp_path):
    u = faults.url
    slow = {"drip_body": "/drip-body.jpg", "drip_headers": "/drip-headers.jpg", "stall": "/stall.jpg"}
    photos = [(k, u + p) for k, p in slow.items()] + [(f"good{i}", f"{u}/img/{i}.jpg") for i in range(3)]
    started = time.monotonic()
    results = by_id(bounded(30, download_photos, photos, tmp_path, FAULTY, progress=False))
    elapsed = time.monotonic() - started
    for key, path in slow.items():
        r = results[key]
        assert (r.status, r.reason, r.permanent) == ("failed", "timeout", False), r
        assert "no complete answer within 1 s" in r.detail
        assert faults.hits[path] == FAULTY.retries + 1  # one budget: 3 attempts, each cut at 1 s
    assert all(results[f"good{i}"].ok for i in range(3))
    # The documented bound, (retries + 1) x total_timeout_s + waits, with 2 s of slack; the
    # read timeout (5 s) never fired: a drip keeps every read under it.
    assert 3.0 <= elapsed < FAULTY_BOUND_S + 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good0.jpg", "good1.jpg", "good2.jpg"]
    for _ in range(100):  # every deadline timer was cancelled or has fired: none is left behind
        if not any(t.name == "download-deadline" for t in threading.enumerate()):
            break
        time.sleep(0.01)
    assert not any(t.name == "download-deadline" for t in threading.enumerate())


def test_the_release_fetch_keeps_the_deadline_too(faults, tmp_path):
    started = time.monotonic()
    with pytest.raises(SourceError, match="no complete answer within 1 s"):
        bounded(10, fetch_to_cache, f"{faults.url}/drip-body.jpg", tmp_path, FAULTY)
    assert time.monotonic() - started < 3  # one attempt: the body is not retried there
    path = bounded(10, fetch_to_cache, f"{faults.url}/img/3.jpg", tmp_path, FAULTY)
    assert path.read_bytes() == jpeg_bytes(3)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_body_that_breaks_off_is_retried_from_the_same_budget(faults, tmp_path):
    u = faults.url
    photos = [
        ("reset_once", f"{u}/reset-once/a.jpg"),
        ("short_once", f"{u}/short-once/a.jpg"),
        ("reset_always", f"{u}/reset-always.jpg"),
    ]
    results = by_id(bounded(20, download_photos, photos, tmp_path, FAULTY, progress=False))
    assert results["reset_once"].ok and results["short_once"].ok
    assert faults.hits["/reset-once/a.jpg"] == faults.hits["/short-once/a.jpg"] == 2
    always = results["reset_always"]
    assert (always.reason, always.permanent) == ("connection_error", False)
    assert "reset" in always.detail.lower()
    assert faults.hits["/reset-always.jpg"] == FAULTY.retries + 1  # not (retries + 1) ** 2
    with Image.open(tmp_path / "reset_once.jpg") as im:
        im.load()  # the retried body is whole


class CappedClock:
    """urllib3's view of the time module, whose sleeps are recorded and cut to 1 s: should
    the code under test wait for the hour asked, the test fails instead of leaving a worker
    asleep for an hour (which would hold the interpreter's exit)."""

    def __init__(self):
        self.asked: list[float] = []

    def sleep(self, seconds):
        self.asked.append(seconds)
        time.sleep(min(seconds, 1.0))

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_retry_after_over_the_cap_fails_at_once(faults, tmp_path, monkeypatch):
    clock = CappedClock()
    monkeypatch.setattr(urllib3.util.retry, "time", clock)
    started = time.monotonic()
    [r] = bounded(10, download_photos, [("p", f"{faults.url}/retry-after-long.jpg")], tmp_path, FAULTY, progress=False)
    assert time.monotonic() - started < 2 and clock.asked == []  # not the hour the server asked for
    assert (r.reason, r.permanent, r.http_status) == ("rate_limited", False, 429)
    assert "3600 s" in r.detail and "60 s" in r.detail
    assert faults.hits["/retry-after-long.jpg"] == 1


def test_a_retry_after_within_the_cap_is_waited_for(faults, tmp_path):
    [ok] = bounded(10, download_photos, [("p", f"{faults.url}/busy-once/a.jpg")], tmp_path, FAULTY, progress=False)
    assert ok.ok
    first, second = faults.times["/busy-once/a.jpg"]
    assert second - first >= 0.9  # Retry-After: 1, not the 0.01 s backoff
    capped = dataclasses.replace(FAULTY, max_retry_after_s=0.5)
    [r] = bounded(10, download_photos, [("q", f"{faults.url}/busy-once/b.jpg")], tmp_path, capped, progress=False)
    assert (r.reason, r.http_status) == ("rate_limited", 503) and "over the limit of 0.5 s" in r.detail
    assert faults.hits["/busy-once/b.jpg"] == 1
    with pytest.raises(BadArgument, match="max_retry_after_s"):
        download_photos([], tmp_path, dataclasses.replace(FAULTY, max_retry_after_s=-1), progress=False)


@pytest.mark.parametrize("allow", [{}, {"allow_local_files": True}], ids=["default", "local_files_allowed"])
def test_a_redirect_to_a_local_file_is_refused(faults, tmp_path, allow):
    [r] = bounded(
        10, download_photos, [("p", f"{faults.url}/to-file.jpg")], tmp_path / "cache", FAULTY, progress=False, **allow
    )
    assert (r.reason, r.permanent) == ("bad_url", True)
    assert "file:///etc/passwd" in r.detail
    assert list((tmp_path / "cache").iterdir()) == []


def test_only_regular_local_files_are_read(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = folder / "fifo.jpg"
    os.mkfifo(fifo)
    (folder / "dir.jpg").mkdir()
    (folder / "big.jpg").write_bytes(jpeg_bytes(1, (400, 300)))
    (folder / "ok.jpg").write_bytes(jpeg_bytes(2))
    photos = [
        ("fifo", str(fifo)),
        ("dir", (folder / "dir.jpg").as_uri()),
        ("device", "/dev/null"),
        ("big", str(folder / "big.jpg")),
        ("ok", str(folder / "ok.jpg")),
    ]
    small = dataclasses.replace(FAULTY, max_bytes=3000)
    try:
        results = by_id(
            bounded(10, download_photos, photos, tmp_path / "cache", small, progress=False, allow_local_files=True)
        )
    finally:  # should a reader be blocked opening the FIFO, a writer's open lets it go
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader, as it should be
            pass
    assert {k: (results[k].reason, results[k].permanent) for k in ("fifo", "dir", "device")} == {
        "fifo": ("not_a_file", True),
        "dir": ("not_a_file", True),
        "device": ("not_a_file", True),
    }
    assert "a FIFO" in results["fifo"].detail and "a directory" in results["dir"].detail
    assert results["big"].reason == "too_large" and results["ok"].ok


def test_an_unforeseen_exception_fails_only_its_photo(faults, tmp_path, monkeypatch, caplog):
    real = download.normalize_image_bytes
    bad = jpeg_bytes(2)

    def flaky_normalize(data, **kwargs):
        if data == bad:
            raise RuntimeError("boom")
        return real(data, **kwargs)

    monkeypatch.setattr(download, "normalize_image_bytes", flaky_normalize)
    caplog.set_level(logging.DEBUG, logger="clipsql.download")
    photos = [(f"p{i}", f"{faults.url}/img/{i}.jpg") for i in range(4)]
    results = by_id(bounded(10, download_photos, photos, tmp_path, FAULTY, progress=False))
    r = results["p2"]
    assert (r.status, r.reason, r.detail, r.permanent) == ("failed", "unexpected_error", "RuntimeError: boom", False)
    assert all(results[f"p{i}"].ok for i in (0, 1, 3))
    [record] = [rec for rec in caplog.records if "unexpected error" in rec.getMessage()]
    assert record.levelno == logging.DEBUG and record.exc_info[0] is RuntimeError


def test_a_corrupt_cached_image_is_fetched_again(faults, tmp_path):
    (tmp_path / "p.jpg").write_bytes(b"not a jpeg any more")
    (tmp_path / "q.jpg").write_bytes(b"")
    photos = [("p", f"{faults.url}/img/1.jpg"), ("q", f"{faults.url}/img/2.jpg")]
    results = bounded(10, download_photos, photos, tmp_path, FAULTY, progress=False)
    assert all(r.ok and not r.cached for r in results)
    assert faults.hits["/img/1.jpg"] == faults.hits["/img/2.jpg"] == 1
    with Image.open(tmp_path / "p.jpg") as im:
        assert im.size == (96, 64)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_cache_write_fault_stops_the_stage(faults, tmp_path, monkeypatch, code):
    def failing_write(target, data):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(download, "_write_atomically", failing_write)
    photos = [(f"p{i}", f"{faults.url}/img/{i}.jpg") for i in range(40)]
    options = dataclasses.replace(FAULTY, workers=2)
    with pytest.raises(StoreError, match=re.escape(f"cannot write the image cache {tmp_path}: {os.strerror(code)}")):
        bounded(10, download_photos, photos, tmp_path, options, progress=False)
    assert sum(faults.hits.values()) <= 2 * options.workers  # the pending photos were not tried


def _mount_tmpfs(where: Path, size: str = "64k") -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a tiny file system to fill")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs, unmounted after the test."""
    where = tmp_path / "tiny"
    where.mkdir()
    _mount_tmpfs(where)
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_stops_the_stage(faults, tiny_fs):
    cache = tiny_fs / "images"
    cache.mkdir()
    fd = os.open(tiny_fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    photos = [(f"p{i}", f"{faults.url}/img/{i}.jpg") for i in range(40)]
    options = dataclasses.replace(FAULTY, workers=2)
    with pytest.raises(StoreError, match=re.escape(f"cannot write the image cache {cache}: No space left on device")):
        bounded(10, download_photos, photos, cache, options, progress=False)
    assert sum(faults.hits.values()) <= 2 * options.workers
    assert [p.name for p in cache.iterdir()] == []  # no temporary file left behind


def test_a_read_only_cache_stops_the_stage(faults, tiny_fs):
    cache = tiny_fs / "images"
    cache.mkdir()
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
    photos = [(f"p{i}", f"{faults.url}/img/{i}.jpg") for i in range(10)]
    with pytest.raises(StoreError, match=re.escape(f"cannot write the image cache {cache}: Read-only file system")):
        bounded(10, download_photos, photos, cache, dataclasses.replace(FAULTY, workers=2), progress=False)
