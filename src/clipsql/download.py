"""Download stage: fetch, validate and cache every photo's image.

Public entry point: :func:`download_photos` (and :func:`fetch_to_cache` for a release zip).

Each image is fetched with a `requests` Session whose urllib3 `Retry` retries connection
errors, read errors, 429 and 5xx with exponential backoff and honours `Retry-After`;
connect and read timeouts and a total deadline bound each request, and a body over
`max_bytes` is abandoned. The body is decoded in full with Pillow (:mod:`clipsql.images`)
and written to `<image_dir>/<photo_id>.jpg` atomically (temporary file + rename), so the
cache never holds a half-written image and a rerun fetches nothing already cached.

Every photo ends with a :class:`DownloadResult`: ok, or failed with a reason, a detail,
the HTTP status when there was one, and whether the failure is permanent (404, an
undecodable body: retrying will not help) or transient (timeouts, 5xx, connection errors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import requests
from PIL import Image
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from .errors import BadArgument, SourceError
from .images import DEFAULT_MAX_PIXELS, InvalidImage, normalize_image_bytes

log = logging.getLogger(__name__)

#: HTTP statuses retried with backoff (RFC 6585 429, and the 5xx that mean "try later").
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Failures that are not worth retrying on a later run.
PERMANENT_REASONS = frozenset({"http_4xx", "empty", "not_an_image", "unsupported_format",
                               "too_many_pixels", "undecodable", "too_large", "bad_url", "no_file"})
_CHUNK_BYTES = 64 * 1024
USER_AGENT = "clipsql/0.1 (+photo search ETL)"


@dataclasses.dataclass(frozen=True)
class DownloadOptions:
    """Settings of the download stage.

    Attributes:
        workers: concurrent downloads (threads).
        width: Unsplash dynamic-URL width in pixels (`w=` query parameter); 0 leaves URLs as given.
        connect_timeout_s / read_timeout_s: per-request socket timeouts, seconds.
        total_timeout_s: deadline for one attempt's whole body, seconds (a slow drip ends).
        max_bytes: largest body accepted, bytes.
        retries: retries per request for connection/read errors, 429 and 5xx.
        backoff_s: urllib3 backoff factor, seconds (sleeps backoff_s * 2**(n-1)).
        max_pixels: largest image accepted, width x height.
    """

    workers: int = 16
    width: int = 640
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_bytes: int = 25 * 1024 * 1024
    retries: int = 3
    backoff_s: float = 0.5
    max_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        """Raise BadArgument naming the first setting out of range."""
        for name in ("workers", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise BadArgument(f"download {name} must be >= 1, got {getattr(self, name)}")
        for name in ("width", "retries"):
            if getattr(self, name) < 0:
                raise BadArgument(f"download {name} must be >= 0, got {getattr(self, name)}")
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "backoff_s"):
            if getattr(self, name) < 0 or (name != "backoff_s" and getattr(self, name) == 0):
                raise BadArgument(f"download {name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    """How one photo's download ended.

    `status` is 'ok' or 'failed'; for a failure `reason` is a short code (e.g. 'http_4xx',
    'timeout', 'undecodable') and `detail` a sentence; `http_status` is the last HTTP status
    seen, if any; `cached` says the image was already in the cache (no request made);
    `width`/`height` are the cached image's pixels.
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


def image_path(image_dir: str | os.PathLike, photo_id: str) -> Path:
    """The cache file of a photo: `<image_dir>/<photo_id>.jpg`."""
    return Path(image_dir) / f"{photo_id}.jpg"


def cached_image(image_dir: str | os.PathLike | None, photo_id: str) -> Path | None:
    """The cached image of `photo_id` if there is one, else None. A photo_id names its cache
    file (clipsql.sources): one with a path separator, a NUL or a leading dot names none, so a
    caller's photo_id can never reach a file outside the cache; nor does one too long for a
    file name (over 200 characters: Unsplash ids have 11)."""
    if (image_dir is None or not photo_id or len(photo_id) > 200 or photo_id.startswith(".")
            or any(c in photo_id for c in "/\\\x00")):
        return None
    path = image_path(image_dir, photo_id)
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. a name the file system refuses
        return None


def with_width(url: str, width: int) -> str:
    """Set the Unsplash/Imgix `w=` parameter of an http(s) URL (other URLs unchanged)."""
    if width <= 0 or not url.startswith(("http://", "https://")):
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "w"]
    query.append(("w", str(width)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def make_session(options: DownloadOptions, pool_size: int = 1) -> requests.Session:
    """A requests Session retrying connection/read errors, 429 and 5xx with backoff.

    urllib3 honours a `Retry-After` header on 429/503 (respect_retry_after_header).
    """
    retry = Retry(
        total=options.retries, connect=options.retries, read=options.retries,
        status=options.retries, other=0, backoff_factor=options.backoff_s,
        status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True, raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def download_photos(photos: Sequence[tuple[str, str | None]], image_dir: str | os.PathLike,
                    options: DownloadOptions = DownloadOptions(), *, progress: bool = True) -> list[DownloadResult]:
    """Fetch, validate and cache the image of each (photo_id, url).

    Args:
        photos: (photo_id, url) pairs; url is http(s), file:// or a local path. A photo whose
            `<image_dir>/<photo_id>.jpg` exists is not fetched again.
        image_dir: the image cache folder (created if missing).
        options: see :class:`DownloadOptions`.
        progress: show a progress bar.

    Returns:
        One DownloadResult per input pair, in input order.

    Raises:
        BadArgument: invalid options (before any request is made).
    """
    options.validate()
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(image_dir)
    results: list[DownloadResult | None] = [None] * len(photos)
    local = threading.local()

    def fetch(index: int) -> tuple[int, DownloadResult]:
        if not hasattr(local, "session"):
            local.session = make_session(options)
        photo_id, url = photos[index]
        return index, _download_one(local.session, photo_id, url, image_dir, options)

    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="download") as pool, \
            tqdm(total=len(photos), desc="download", unit="photo", disable=not progress) as bar:
        futures = [pool.submit(fetch, i) for i in range(len(photos))]
        failed = 0
        for future in as_completed(futures):
            index, result = future.result()
            results[index] = result
            failed += not result.ok
            bar.update(1)
            if failed:
                bar.set_postfix(failed=failed, refresh=False)
    return results  # type: ignore[return-value]


def _download_one(session: requests.Session, photo_id: str, url: str | None, image_dir: Path,
                  options: DownloadOptions) -> DownloadResult:
    target = image_path(image_dir, photo_id)
    url = url or ""
    if target.exists():
        with Image.open(target) as im:
            width, height = im.size
        return DownloadResult(photo_id, url, "ok", str(target), bytes=target.stat().st_size,
                              width=width, height=height, cached=True)
    http_status = None
    try:
        if url.startswith(("http://", "https://")):
            data, http_status = _fetch_http(session, with_width(url, options.width), options)
        elif url:
            data = _read_local(url, options.max_bytes)
        else:
            raise _Failure("bad_url", "the photo has no image URL")
        jpeg, (width, height) = normalize_image_bytes(data, max_pixels=options.max_pixels)
    except _Failure as exc:
        return DownloadResult(photo_id, url, "failed", reason=exc.reason, detail=exc.detail,
                              http_status=exc.http_status or http_status)
    except InvalidImage as exc:
        return DownloadResult(photo_id, url, "failed", reason=exc.reason, detail=exc.detail,
                              http_status=http_status, bytes=len(data))
    _write_atomically(target, jpeg)
    return DownloadResult(photo_id, url, "ok", str(target), http_status=http_status,
                          bytes=len(jpeg), width=width, height=height)


class _Failure(Exception):
    def __init__(self, reason: str, detail: str, http_status: int | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.http_status = reason, detail, http_status


def _fetch_http(session: requests.Session, url: str, options: DownloadOptions) -> tuple[bytes, int]:
    deadline = time.monotonic() + options.total_timeout_s
    try:
        with session.get(url, stream=True, timeout=(options.connect_timeout_s, options.read_timeout_s)) as response:
            status = response.status_code
            if status >= 400:
                kind = "http_4xx" if status < 500 and status != 429 else "http_5xx" if status >= 500 else "http_429"
                raise _Failure(kind, f"HTTP {status} {response.reason} after retries" if kind != "http_4xx"
                               else f"HTTP {status} {response.reason}", status)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > options.max_bytes:
                raise _Failure("too_large", f"Content-Length {declared} bytes is over the limit of {options.max_bytes}", status)
            body = bytearray()
            for chunk in response.iter_content(_CHUNK_BYTES):
                body += chunk
                if len(body) > options.max_bytes:
                    raise _Failure("too_large", f"body is over the limit of {options.max_bytes} bytes", status)
                if time.monotonic() > deadline:
                    raise _Failure("timeout", f"body not complete within {options.total_timeout_s:g} s", status)
            return bytes(body), status
    except requests.exceptions.RetryError as exc:
        raise _Failure("http_5xx", f"gave up after {options.retries} retries: {_root(exc)}") from None
    except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout) as exc:
        raise _Failure("timeout", _root(exc)) from None
    except requests.exceptions.ConnectionError as exc:
        text = _root(exc)
        reason = "timeout" if "timed out" in text.lower() else "connection_error"
        raise _Failure(reason, text) from None
    except requests.exceptions.InvalidURL as exc:
        raise _Failure("bad_url", str(exc)) from None
    except requests.exceptions.RequestException as exc:
        raise _Failure("connection_error", _root(exc)) from None


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    return f"{type(exc).__name__}: {exc}"[:500]


def _read_local(url: str, max_bytes: int) -> bytes:
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)) if url.startswith("file://") else Path(url)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _Failure("too_large", f"{size} bytes is over the limit of {max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise _Failure("no_file", f"{path} does not exist") from None
    except OSError as exc:
        raise _Failure("no_file", f"{path}: {exc.strerror}") from None


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(image_dir: str | os.PathLike) -> int:
    """Remove the temporary files a killed run left in the cache (they never became cache
    entries: an image gets its name only by an atomic rename). Call it only while no other
    process downloads into `image_dir` (the refresh holds the store's lock).

    Returns:
        How many files were removed.
    """
    removed = 0
    for stale in Path(image_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def fetch_to_cache(url: str, cache_dir: str | os.PathLike, options: DownloadOptions = DownloadOptions(
        read_timeout_s=60.0, total_timeout_s=3600.0, max_bytes=8 * 1024**3)) -> Path:
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
        with os.fdopen(fd, "wb") as f, session.get(
                url, stream=True, timeout=(options.connect_timeout_s, options.read_timeout_s)) as response:
            if response.status_code >= 400:
                raise SourceError(f"downloading {url}: HTTP {response.status_code} {response.reason}")
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, desc=f"fetch {name}", unit="B", unit_scale=True) as bar:
                written = 0
                for chunk in response.iter_content(1024 * 1024):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    if written > options.max_bytes or time.monotonic() > deadline:
                        raise SourceError(f"downloading {url}: over {options.max_bytes} bytes or "
                                          f"{options.total_timeout_s:g} s")
        os.replace(temp, target)
    except requests.exceptions.RequestException as exc:
        raise SourceError(f"downloading {url}: {_root(exc)}") from None
    finally:
        Path(temp).unlink(missing_ok=True)
    return target
