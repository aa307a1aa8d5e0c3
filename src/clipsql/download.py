"""Download stage: fetch, validate and cache every photo's image.

Public entry point: :func:`download_photos` (and :func:`fetch_to_cache` for a release zip).

Each image is fetched with a `requests` Session whose urllib3 `Retry` retries connection
errors, read errors, 429 and 5xx with exponential backoff and honours `Retry-After` up to a
cap (a longer wait fails the photo at once, 'rate_limited': a later run retries it). A body
that breaks off (a reset, fewer bytes than its Content-Length) is retried too, from the same
retry budget, so a photo makes at most `retries + 1` attempts in all. The body is decoded in
full with Pillow (:mod:`clipsql.images`) and written to `<image_dir>/<photo_id>.jpg`
(the cache's layout is :mod:`clipsql.cache`'s) atomically (temporary file + rename), so the
cache never holds a half-written image and a rerun fetches nothing already cached.

Every wait is bounded (see :class:`DownloadOptions` for the exact bound). Connect and read
timeouts bound each socket operation, but not a server that sends one byte a second, so each
attempt also has a deadline, `total_timeout_s`, that holds however slowly the server sends
its status line, headers or body. Design: a watchdog timer per attempt, armed by our
subclasses of urllib3's `HTTPConnection`/`HTTPSConnection` when the attempt first connects or
sends its request (installed as the `ConnectionCls` of the PoolManager's pool classes through
a custom requests `HTTPAdapter`); when it expires it shuts the socket down
(`socket.shutdown(SHUT_RDWR)`), so the blocked read in the fetching thread returns at once
and urllib3/requests raise, and it sets a flag so the fetch reports 'timeout' ("no complete
answer within N s") rather than a connection error. Why this design: it needs no private
attribute of urllib3 or requests (only the public `ConnectionCls`, `pool_classes_by_scheme`,
`connect()`/`request()` and `Retry` hooks); it stops a blocked read where it blocks (a check
between reads cannot: the read itself does not return); it covers the headers, which happen
inside urllib3 before any response object exists; and it adds one short-lived timer thread
per attempt, not a thread per request left running. The alternatives were worse: a check of
the clock between reads (today's) misses a drip; a shorter read timeout does not bound the
sum of reads; running each request in a thread abandoned at the deadline leaks threads and
sockets. The attempt a connection belongs to is the fetching thread's (thread-local): the
fetch owns the watchdog and reads its flag; the retry sleeps end an attempt.

What a URL may be is the caller's decision: only http(s) URLs are fetched, unless the caller
passes `allow_local_files=True` (image-folder sources), which also reads local paths and
file:// URLs, regular files only. A redirect to another scheme is always refused.

Every photo ends with a :class:`DownloadResult`: ok, or failed with a reason, a detail,
the HTTP status when there was one, and whether the failure is permanent (404, an
undecodable body: retrying will not help) or transient (timeouts, 5xx, connection errors).
No exception of one photo escapes (an unforeseen one becomes 'unexpected_error'), except a
fault of the cache itself (disk full, read-only, no permission), which stops the stage with
:class:`~clipsql.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import requests
import urllib3
from PIL import Image
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from . import cache
from .cache import TEMP_SUFFIX, image_path, remove_stale_temp_files, temp_prefix
from .errors import SourceError, StoreError
from .download_options import MAX_RETRIES, MAX_WAIT_S, MAX_WORKERS, DownloadOptions  # noqa: F401 - the stage's public names
from .images import InvalidImage, normalize_image_bytes

log = logging.getLogger(__name__)

#: HTTP statuses retried with backoff (RFC 6585 429, and the 5xx that mean "try later").
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Failures that are not worth retrying on a later run. The others ('timeout',
#: 'connection_error', 'http_5xx', 'http_429', 'rate_limited', 'unexpected_error') are transient.
PERMANENT_REASONS = frozenset(
    {
        "http_4xx",
        "empty",
        "not_an_image",
        "unsupported_format",
        "too_many_pixels",
        "undecodable",
        "too_large",
        "bad_url",
        "no_file",
        "not_a_file",
    }
)
#: errno values of a write to the image cache that are the cache's fault, not a photo's: they
#: stop the stage with StoreError instead of failing every photo in turn.
CACHE_FAULT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, name)
)
_CHUNK_BYTES = 64 * 1024
USER_AGENT = "clipsql/0.1 (+photo search ETL)"
_LOCAL_ONLY = "local paths are only read for image-folder sources"


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """How one photo's download ended.

    `status` is 'ok' or 'failed'; for a failure `reason` is a short code and `detail` a
    sentence; `http_status` is the last HTTP status seen, if any; `cached` says the image was
    already in the cache (no request made); `width`/`height` are the cached image's pixels.

    Reason codes, permanent (a later run does not retry them, see :data:`PERMANENT_REASONS`):
    'http_4xx' (a 4xx other than 429), 'bad_url' (no URL; a scheme other than http(s); a local
    path or file:// URL when local files are not allowed; a redirect to another scheme),
    'no_file' (a local file that does not exist or cannot be read), 'not_a_file' (a local
    path that is a directory, FIFO, device...), 'too_large' (over max_bytes), and from
    :mod:`clipsql.images`: 'empty', 'not_an_image', 'unsupported_format', 'too_many_pixels',
    'undecodable'. Transient (a later run retries them): 'timeout' (no complete answer within
    the deadline or a socket timeout, after the retries), 'connection_error' (refused, reset,
    a body that broke off, after the retries), 'http_5xx' and 'http_429' (still failing after
    the retries), 'rate_limited' (the server asked to wait longer than max_retry_after_s),
    'unexpected_error' (an exception nobody foresaw; detail "ExceptionClass: message").
    """

    photo_id: str
    url: str
    status: str
    path: str | None = None
    reason: str | None = None
    detail: str | None = None
    http_status: int | None = None
    bytes: int = 0
    width: int | None = None
    height: int | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def permanent(self) -> bool:
        """A failure that a later run should not retry (unless asked to)."""
        return self.status == "failed" and self.reason in PERMANENT_REASONS


# The cache's layout (image_path, cached_image, remove_stale_temp_files) lives in
# clipsql.cache, which search, render, status and the refresh read too; the names stay
# importable from here.
cached_image = cache.cached_image


def with_width(url: str, width: int) -> str:
    """Set the Unsplash/Imgix `w=` parameter of an http(s) URL (other URLs unchanged)."""
    if width <= 0 or not url.startswith(("http://", "https://")):
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "w"]
    query.append(("w", str(width)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# -- the per-attempt deadline --------------------------------------------------------------


class _Watchdog:
    """The deadline of one fetch's current attempt.

    `begin()` (from a connection's connect() or request(); a no-op while an attempt runs)
    starts a daemon timer of `seconds`; `attach(sock)` names the socket the attempt reads;
    when the timer expires it sets `expired` and shuts that socket down, so a read blocked on
    it returns at once. `stop()` ends the attempt (between retries and when the fetch ends);
    `expired` keeps saying whether the last attempt ran out of time until the next begins.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._sock: socket.socket | None = None
        self._generation = 0

    def begin(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._generation += 1
            self.expired = False
            self._sock = None
            self._timer = threading.Timer(self.seconds, self._expire, args=(self._generation,))
            self._timer.daemon = True
            self._timer.name = "download-deadline"
            self._timer.start()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._timer is None or sock is None:
                return
            self._sock = sock
            if self.expired:  # it expired while connecting, before there was a socket
                _shutdown(sock)

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._generation += 1
            self._sock = None

    def _expire(self, generation: int) -> None:
        with self._lock:  # under the lock: stop() cannot return while a shutdown is pending
            if generation != self._generation:
                return
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for an SSLSocket: the kernel socket is shut down
        # and the blocked read returns (EOF), whichever thread is in it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Fetch:
    """One fetch in progress in this thread: its watchdog, and the Retry state its next
    request starts from (None: the adapter's own), so body retries spend the same budget."""

    def __init__(self, seconds: float):
        self.watchdog = _Watchdog(seconds)
        self.retry: Retry | None = None


_local = threading.local()


def _current_fetch() -> _Fetch | None:
    return getattr(_local, "fetch", None)


@contextlib.contextmanager
def _fetching(seconds: float) -> Iterator[_Fetch]:
    fetch, previous = _Fetch(seconds), _current_fetch()
    _local.fetch = fetch
    try:
        yield fetch
    finally:
        fetch.watchdog.stop()
        _local.fetch = previous


class _WatchedConnection:
    """Mixin of urllib3 connections: the first connect() or request() of an attempt starts
    the fetching thread's watchdog, and each names its socket to it."""

    def connect(self) -> None:
        fetch = _current_fetch()
        if fetch is not None:
            fetch.watchdog.begin()
        super().connect()  # type: ignore[misc]
        if fetch is not None:
            fetch.watchdog.attach(self.sock)  # type: ignore[attr-defined]

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        fetch = _current_fetch()
        if fetch is not None:
            fetch.watchdog.begin()
            fetch.watchdog.attach(self.sock)  # type: ignore[attr-defined]  # None: connect() attaches
        super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class _RetryAfterTooLong(Exception):
    """A 429/503 asked to wait longer than the cap (raised out of urllib3 by BoundedRetry)."""

    def __init__(self, asked: float, cap: float, status: int | None):
        super().__init__(
            f"HTTP {status}: the server asked to wait {asked:g} s (Retry-After), over the "
            f"limit of {cap:g} s (max_retry_after_s); a later run tries again"
        )
        self.asked, self.cap, self.status = asked, cap, status


class BoundedRetry(Retry):
    """urllib3 Retry that waits for a `Retry-After` of at most `max_retry_wait` seconds (a
    longer one is not waited for: the request fails at once), treats an unreadable
    Retry-After as absent (backoff), and ends the current attempt's deadline while it waits."""

    def __init__(self, *args: Any, max_retry_wait: float = 60.0, **kwargs: Any):
        kwargs.setdefault("retry_after_max", float("inf"))  # compared with the cap, not clipped
        super().__init__(*args, **kwargs)
        self.max_retry_wait = max_retry_wait

    def new(self, **kw: Any) -> BoundedRetry:
        kw.setdefault("max_retry_wait", self.max_retry_wait)
        return super().new(**kw)

    def sleep_for_retry(self, response: Any) -> bool:
        try:
            asked = self.get_retry_after(response)
        except InvalidHeader:
            return False
        if asked is None:
            return False
        if asked > self.max_retry_wait:
            raise _RetryAfterTooLong(asked, self.max_retry_wait, getattr(response, "status", None))
        if asked > 0:
            time.sleep(asked)
            return True
        return False

    def sleep(self, response: Any = None) -> None:
        fetch = _current_fetch()
        if fetch is not None:
            fetch.watchdog.stop()  # a wait between attempts is no attempt's time
        super().sleep(response)


class _BoundedAdapter(HTTPAdapter):
    """requests adapter whose pools make watched connections, and whose `max_retries` is the
    current fetch's Retry state when it has one (a retry after a broken body continues the
    budget urllib3 spent, instead of starting a new one)."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):  # not SOCKS: it has pool classes of its own
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager

    @property  # type: ignore[override]
    def max_retries(self) -> Retry:
        fetch = _current_fetch()
        return fetch.retry if fetch is not None and fetch.retry is not None else self._base_retries

    @max_retries.setter
    def max_retries(self, value: Retry) -> None:
        self._base_retries = value


def make_session(options: DownloadOptions, pool_size: int = 1) -> requests.Session:
    """A requests Session retrying connection/read errors, 429 and 5xx with backoff, whose
    connections keep the per-attempt deadline of the fetches of this module.

    A `Retry-After` on 429/503 is honoured up to `options.max_retry_after_s`. Use the
    session from one thread at a time (as requests advises).
    """
    retry = BoundedRetry(
        total=options.retries,
        connect=options.retries,
        read=options.retries,
        status=options.retries,
        other=0,
        backoff_factor=options.backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        max_retry_wait=options.max_retry_after_s,
    )
    session = requests.Session()
    adapter = _BoundedAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


# -- the stage -------------------------------------------------------------------------------


def download_photos(
    photos: Sequence[tuple[str, str | None]],
    image_dir: str | os.PathLike,
    options: DownloadOptions = DownloadOptions(),
    *,
    progress: bool | tqdm = True,
    allow_local_files: bool = False,
    remove_stale: bool = True,
) -> list[DownloadResult]:
    """Fetch, validate and cache the image of each (photo_id, url).

    Args:
        photos: (photo_id, url) pairs. A photo whose `<image_dir>/<photo_id>.jpg` exists (and
            opens as an image) is not fetched again.
        image_dir: the image cache folder (created if missing).
        options: see :class:`DownloadOptions`.
        progress: show a progress bar of its own (True), none (False), or advance this one per
            photo (a tqdm bar the caller owns, e.g. the refresh's download stage).
        allow_local_files: also read local paths and file:// URLs (regular files only, at
            most max_bytes), for image-folder sources. When False (the default) only http(s)
            URLs are fetched; any other URL is a permanent 'bad_url' failure and nothing is read.
        remove_stale: first remove the temporary files a killed run left in the cache (True);
            False where other processes may be writing into the same cache at the same time
            (the Ray executor's download tasks: the refresh removed them when it started).

    Returns:
        One DownloadResult per input pair, in input order.

    Raises:
        BadArgument: invalid options (before any request is made).
        StoreError: the image cache cannot be written (disk full, read-only, no permission);
            the photos not yet started are not attempted.
    """
    options.validate()
    image_dir = Path(image_dir)
    with _cache_faults(image_dir):
        image_dir.mkdir(parents=True, exist_ok=True)
        if remove_stale:
            remove_stale_temp_files(image_dir)
    results: list[DownloadResult | None] = [None] * len(photos)
    local = threading.local()
    stopping = threading.Event()

    def fetch(index: int) -> tuple[int, DownloadResult | None]:
        if stopping.is_set():
            return index, None
        if not hasattr(local, "session"):
            local.session = make_session(options)
        photo_id, url = photos[index]
        return index, _download_one(
            local.session, photo_id, url, image_dir, options, allow_local_files=allow_local_files
        )

    own_bar = isinstance(progress, bool)
    bar_context: contextlib.AbstractContextManager[Any] = (
        tqdm(total=len(photos), desc="download", unit="photo", disable=not progress)
        if own_bar
        else contextlib.nullcontext(progress)
    )
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="download") as pool, bar_context as bar:
        futures = [pool.submit(fetch, i) for i in range(len(photos))]
        failed = 0
        try:
            for future in as_completed(futures):
                index, result = future.result()
                if result is None:  # not started: the stage is stopping
                    continue
                results[index] = result
                failed += not result.ok
                bar.update(1)
                if failed and own_bar:
                    bar.set_postfix(failed=failed, refresh=False)
        except BaseException:  # StoreError, KeyboardInterrupt: start nothing more
            stopping.set()
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def _cache_faults(image_dir: Path) -> Iterator[None]:
    """Turn an OSError that is the cache's fault (CACHE_FAULT_ERRNOS) into StoreError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in CACHE_FAULT_ERRNOS:
            raise StoreError(f"cannot write the image cache {image_dir}: {exc.strerror or exc}") from exc
        raise


def _download_one(
    session: requests.Session,
    photo_id: str,
    url: str | None,
    image_dir: Path,
    options: DownloadOptions,
    *,
    allow_local_files: bool = False,
) -> DownloadResult:
    """One photo, start to end: never raises but StoreError (a fault of the cache)."""
    url = url or ""
    try:
        return _download(session, photo_id, url, image_dir, options, allow_local_files)
    except StoreError:
        raise
    except Exception as exc:
        log.debug("photo %s (%s): unexpected error", photo_id, url, exc_info=True)
        return DownloadResult(
            photo_id, url, "failed", reason="unexpected_error", detail=f"{type(exc).__name__}: {exc}"[:500]
        )


def _download(
    session: requests.Session,
    photo_id: str,
    url: str,
    image_dir: Path,
    options: DownloadOptions,
    allow_local_files: bool,
) -> DownloadResult:
    target = image_path(image_dir, photo_id)
    if target.exists():
        try:
            with Image.open(target) as im:
                width, height = im.size
            return DownloadResult(
                photo_id, url, "ok", str(target), bytes=target.stat().st_size, width=width, height=height, cached=True
            )
        except (OSError, ValueError, SyntaxError) as exc:  # damaged since: fetch it again
            log.warning("photo %s: cached image %s cannot be opened (%s); fetching it again", photo_id, target, exc)
            with _cache_faults(image_dir):
                target.unlink(missing_ok=True)
    http_status = None
    data = b""
    try:
        if not url:
            raise _Failure("bad_url", "the photo has no image URL")
        try:
            scheme = urllib.parse.urlsplit(url).scheme.lower()
            fetch_url = with_width(url, options.width) if scheme in ("http", "https") else url
        except ValueError as exc:  # e.g. 'http://[::1': Invalid IPv6 URL
            raise _Failure("bad_url", f"not a valid URL: {exc}") from None
        local = scheme in ("", "file")  # a path, or a file: URL
        if scheme in ("http", "https"):
            data, http_status = _fetch_http(session, fetch_url, options)
        elif not local:
            raise _Failure(
                "bad_url",
                f"{scheme}: URLs are not fetched (only http and https"
                f"{', and local files for image-folder sources' if allow_local_files else ''})",
            )
        elif not allow_local_files:
            raise _Failure("bad_url", _LOCAL_ONLY)
        else:
            data = _read_local(url, options.max_bytes)
        jpeg, (width, height) = normalize_image_bytes(data, max_pixels=options.max_pixels)
    except _Failure as exc:
        return DownloadResult(
            photo_id, url, "failed", reason=exc.reason, detail=exc.detail, http_status=exc.http_status or http_status
        )
    except InvalidImage as exc:
        return DownloadResult(
            photo_id, url, "failed", reason=exc.reason, detail=exc.detail, http_status=http_status, bytes=len(data)
        )
    with _cache_faults(image_dir):
        _write_atomically(target, jpeg)
    return DownloadResult(
        photo_id, url, "ok", str(target), http_status=http_status, bytes=len(jpeg), width=width, height=height
    )


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, http_status: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.http_status = reason, detail, http_status


class _BrokenBody(Exception):
    """An attempt whose body broke off (reset, short, deadline): retried from `retries`."""

    def __init__(self, reason: str, detail: str, status: int, retries: Retry | None, error: Exception):
        super().__init__(detail)
        self.reason, self.detail, self.status, self.retries, self.error = reason, detail, status, retries, error


def _fetch_http(session: requests.Session, url: str, options: DownloadOptions) -> tuple[bytes, int]:
    """GET `url`: (body, status), or _Failure. At most `retries + 1` attempts in all, each
    within `total_timeout_s`; a broken body is retried from the Retry state urllib3 left."""
    with _fetching(options.total_timeout_s) as fetch:
        while True:
            try:
                return _fetch_attempt(session, url, options, fetch.watchdog)
            except _BrokenBody as broken:
                made = len(getattr(broken.retries, "history", ()))
                try:
                    fetch.retry = (
                        broken.retries.increment("GET", url, error=broken.error)
                        if isinstance(broken.retries, Retry)
                        else None
                    )
                except MaxRetryError:
                    fetch.retry = None
                if fetch.retry is None:
                    raise _Failure(broken.reason, f"{broken.detail}, after {made} retries", broken.status) from None
                log.debug("retrying %s after: %s", url, broken.detail)
                fetch.retry.sleep()


def _fetch_attempt(
    session: requests.Session, url: str, options: DownloadOptions, watchdog: _Watchdog
) -> tuple[bytes, int]:
    deadline = f"no complete answer within {options.total_timeout_s:g} s"
    try:
        response = session.get(url, stream=True, timeout=(options.connect_timeout_s, options.read_timeout_s))
    except _RetryAfterTooLong as exc:
        raise _Failure("rate_limited", str(exc), exc.status) from None
    except requests.exceptions.RetryError as exc:
        raise _Failure("http_5xx", f"gave up after {options.retries} retries: {_root(exc)}") from None
    except (
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidURL,
    ) as exc:
        # e.g. a redirect to file:///etc/passwd: only http(s) is followed
        raise _Failure("bad_url", f"not followed: {exc}"[:500]) from None
    except requests.exceptions.ConnectionError as exc:
        text = _root(exc)
        if watchdog.expired:
            raise _Failure("timeout", f"{deadline}, after retries") from None
        reason = "timeout" if "timed out" in text.lower() else "connection_error"
        raise _Failure(reason, text) from None
    except requests.exceptions.Timeout as exc:
        raise _Failure("timeout", _root(exc)) from None
    except requests.exceptions.RequestException as exc:
        raise _Failure("connection_error", _root(exc)) from None
    with response:
        status = response.status_code
        if status >= 400:
            kind = "http_4xx" if status < 500 and status != 429 else "http_5xx" if status >= 500 else "http_429"
            raise _Failure(
                kind,
                f"HTTP {status} {response.reason} after retries"
                if kind != "http_4xx"
                else f"HTTP {status} {response.reason}",
                status,
            )
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > options.max_bytes:
            raise _Failure(
                "too_large", f"Content-Length {declared} bytes is over the limit of {options.max_bytes}", status
            )
        retries = getattr(response.raw, "retries", None)
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                body += chunk
                if len(body) > options.max_bytes:
                    raise _Failure("too_large", f"body is over the limit of {options.max_bytes} bytes", status)
                if watchdog.expired:
                    break
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
            cause = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
            if watchdog.expired:
                raise _BrokenBody("timeout", deadline, status, retries, ProtocolError(deadline)) from None
            raise _BrokenBody(
                "timeout" if "timed out" in _root(exc).lower() else "connection_error",
                f"body broke off after {len(body)} bytes: {_root(exc)}",
                status,
                retries,
                cause if isinstance(cause, urllib3.exceptions.HTTPError) else ProtocolError(str(cause)),
            ) from None
        watchdog.stop()
        if watchdog.expired:  # a shut-down socket can also read as a clean end of the body
            raise _BrokenBody("timeout", deadline, status, retries, ProtocolError(deadline))
        return bytes(body), status


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    return f"{type(exc).__name__}: {exc}"[:500]


def _read_local(url: str, max_bytes: int) -> bytes:
    """A local file's bytes: regular files only (a FIFO, directory or device is never opened
    for reading: opening a FIFO blocks), at most `max_bytes`."""
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)) if url.startswith("file:") else Path(url)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _Failure("not_a_file", f"{path} is {_file_kind(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise _Failure("too_large", f"{info.st_size} bytes is over the limit of {max_bytes}")
        # O_NONBLOCK: should the path become a FIFO after the check, opening it does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Failure("not_a_file", f"{path} is {_file_kind(info.st_mode)}, not a regular file")
            os.set_blocking(fd, True)
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _Failure("too_large", f"{path} is over the limit of {max_bytes} bytes")
        return data
    except FileNotFoundError:
        raise _Failure("no_file", f"{path} does not exist") from None
    except OSError as exc:
        raise _Failure("no_file", f"{path}: {exc.strerror or exc}") from None


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "something else"


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def fetch_to_cache(
    url: str,
    cache_dir: str | os.PathLike,
    options: DownloadOptions = DownloadOptions(read_timeout_s=60.0, total_timeout_s=3600.0, max_bytes=8 * 1024**3),
) -> Path:
    """Download `url` (e.g. the release zip) once into `cache_dir`, with a progress bar.

    The file is named after the URL (a hash plus its last path segment) and written
    atomically; while it exists it is reused and nothing is requested.

    Returns:
        The local path.

    Raises:
        SourceError: the download failed (HTTP error, timeout, too large).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlsplit(url).path).name or "release"
    target = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if not target.suffix:
        target = target.with_suffix(".zip")
    if target.exists():
        log.info("using cached %s for %s", target, url)
        return target
    session = make_session(options)
    deadline = time.monotonic() + options.total_timeout_s
    fd, temp = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".tmp")
    try:
        # _fetching: each attempt within total_timeout_s, however slowly the server sends.
        with (
            _fetching(options.total_timeout_s) as fetch,
            os.fdopen(fd, "wb") as f,
            session.get(url, stream=True, timeout=(options.connect_timeout_s, options.read_timeout_s)) as response,
        ):
            if response.status_code >= 400:
                raise SourceError(f"downloading {url}: HTTP {response.status_code} {response.reason}")
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, desc=f"fetch {name}", unit="B", unit_scale=True) as bar:
                written = 0
                for chunk in response.iter_content(1024 * 1024):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    if written > options.max_bytes or time.monotonic() > deadline or fetch.watchdog.expired:
                        raise SourceError(
                            f"downloading {url}: over {options.max_bytes} bytes or {options.total_timeout_s:g} s"
                        )
            fetch.watchdog.stop()
            if fetch.watchdog.expired:
                raise SourceError(f"downloading {url}: no complete answer within {options.total_timeout_s:g} s")
        os.replace(temp, target)
    except _RetryAfterTooLong as exc:
        raise SourceError(f"downloading {url}: {exc}") from None
    except requests.exceptions.RequestException as exc:
        if fetch.watchdog.expired:
            raise SourceError(f"downloading {url}: no complete answer within {options.total_timeout_s:g} s") from None
        raise SourceError(f"downloading {url}: {_root(exc)}") from None
    finally:
        Path(temp).unlink(missing_ok=True)
    return target
