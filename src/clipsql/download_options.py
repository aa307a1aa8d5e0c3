"""The download stage's settings (:class:`DownloadOptions`), apart from the stage itself so
that reading them (the settings, every command line) does not import the HTTP stack: requests
and urllib3 cost about 0.13 s of a cold `clipsql search text` (python -X importtime)."""

from __future__ import annotations

import dataclasses
import math

from .errors import BadArgument
from .images import DEFAULT_MAX_PIXELS

#: Most concurrent downloads (threads) a run may ask for.
MAX_WORKERS = 256
#: Most retries of one request within a run.
MAX_RETRIES = 20
#: Longest timeout, deadline or wait a setting may ask for, seconds (one day).
MAX_WAIT_S = 86_400.0


@dataclasses.dataclass(frozen=True)
class DownloadOptions:
    """Settings of the download stage.

    Attributes:
        workers: concurrent downloads (threads).
        width: Unsplash dynamic-URL width in pixels (`w=` query parameter); 0 leaves URLs as given.
        connect_timeout_s / read_timeout_s: per-socket-operation timeouts, seconds.
        total_timeout_s: deadline of one attempt, seconds: from its first connect or request
            until its body is read (connect, request, status line, headers, redirects, body),
            however slowly the server sends.
        max_bytes: largest body accepted, bytes.
        retries: retries per photo, for connection errors, read errors (before or in the
            body, a deadline that expired included), 429 and 5xx; one budget for all of them.
        backoff_s: urllib3 backoff factor, seconds: no wait before the first retry, then
            backoff_s * 2**(n-1) before the n-th (capped at 120 s).
        max_retry_after_s: longest `Retry-After` waited for, seconds; a 429/503 asking for a
            longer wait fails the photo at once ('rate_limited', transient).
        max_pixels: largest image accepted, width x height.

    Bound: one photo's download ends within

        (retries + 1) * total_timeout_s + W_1 + ... + W_retries  (+ decoding and writing)

    where W_n, the wait before the n-th retry, is the server's Retry-After
    (<= max_retry_after_s) or else the backoff (0 for n = 1, min(backoff_s * 2**(n-1), 120)
    after). So at most (retries + 1) * total_timeout_s + retries * max(max_retry_after_s,
    min(backoff_s * 2**(retries-1), 120)): with the defaults 4 * 120 + 3 * 60 = 660 s. What
    the deadline cannot cut short is what holds no socket yet: DNS resolution (the system
    resolver's timeouts) and a TCP connect or TLS handshake in progress, which run on to
    connect_timeout_s per socket operation before the expired deadline ends the attempt.
    """

    workers: int = 16
    width: int = 640
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_bytes: int = 25 * 1024 * 1024
    retries: int = 3
    backoff_s: float = 0.5
    max_retry_after_s: float = 60.0
    max_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        """Raise BadArgument naming the first setting of the wrong type or out of range:
        counts are integers (workers 1..:data:`MAX_WORKERS`), times finite seconds up to
        :data:`MAX_WAIT_S` (NaN and infinity refused: every wait is bounded)."""
        for name in ("workers", "max_bytes", "max_pixels", "width", "retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadArgument(f"download {name} must be an integer, got {value!r}")
        for name in ("workers", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise BadArgument(f"download {name} must be >= 1, got {getattr(self, name)}")
        if self.workers > MAX_WORKERS:
            raise BadArgument(f"download workers must be at most {MAX_WORKERS}, got {self.workers}")
        for name in ("width", "retries"):
            if getattr(self, name) < 0:
                raise BadArgument(f"download {name} must be >= 0, got {getattr(self, name)}")
        if self.retries > MAX_RETRIES:
            raise BadArgument(f"download retries must be at most {MAX_RETRIES}, got {self.retries}")
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "backoff_s", "max_retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadArgument(f"download {name} must be a finite number of seconds, got {value!r}")
            if value < 0 or (name.endswith("timeout_s") and value == 0):
                raise BadArgument(
                    f"download {name} must be {'> 0' if name.endswith('timeout_s') else '>= 0'}, got {value}"
                )
            if value > MAX_WAIT_S:
                raise BadArgument(f"download {name} must be at most {MAX_WAIT_S:g} s (one day), got {value:g}")
