"""Search: the named queries of queries/ run with every value bound as a parameter.

Query kinds, one public function each, all returning pandas DataFrames:

| function | query vector | query file |
| --- | --- | --- |
| :func:`text` | the text's CLIP embedding | search_photos |
| :func:`image` | an image file, URL or PIL image, embedded | search_photos |
| :func:`similar` | an indexed photo's stored vector (pure SQL, no model) | similar_photos |
| :func:`combined` | weighted text terms (`beach -people 2:sunset`) and images, re-normalized | search_photos |
| :func:`crop` | a box (pixels or fractions) of an image or of an indexed photo | search_photos |
| :func:`duplicates` | none: pairs of photos closer than a threshold | near_duplicates |
| :func:`facets` | any of the above: counts per facet among the top-n | facets |
| :func:`nearest` | a vector you bring, (d,) float32 | search_photos |

(With no filter set, search_photos_unfiltered runs instead: the same text without the filter
block, which ClickHouse plans faster; tests/test_search_queries.py checks the two texts. On
chdb both run as their `_snapshot` twins over the store's in-memory search snapshot, which
return the same rows in under half the time: :mod:`clipsql.snapshot`.)

Photo results have the columns photo_id, distance (cosine, 0..2), description, photo_url,
photo_image_url; closest first, ties broken by photo_id. Every kind takes the same optional
metadata filters (:class:`Filters`, or keyword arguments such as ``country="Iceland"``),
`k` and `offset` (paging) and `max_distance`. Filters run inside the one static SQL text
before the distance ranking, so they never make a query return fewer than k rows while k
photos match.

Re-ranking (`rerank=`): ``"exact"`` lets the HNSW index propose ``overfetch * (k + offset)``
candidates and re-scores them exactly (approximate; meant for stores too big to scan: at
25,000 photos it measured about as fast as the exact search, see bench/search_latency.py;
with a filter set the exact search runs instead); ``"mmr"`` takes the ``overfetch * (k + offset)`` nearest
photos and picks k of them by maximal marginal relevance (`mmr_lambda` 1.0 = pure
relevance, 0.0 = pure diversity).

Every function takes the backend as `store` / `clickhouse_url` / `duckdb` (see
:func:`clipsql.db.open_store`), or an open :class:`~clipsql.db.Store` as `db`, which is then
left open (a notebook keeps one store open for many queries).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import re
import shlex
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import snapshot
from .cache import cached_image
from .constants import STORE_DIM
from .db import Store, use_store
from .embed import cached_embedder
from .errors import BadArgument, NotFound
from .images import DEFAULT_MAX_PIXELS, InvalidImage, open_rgb
from .queries import get_query

log = logging.getLogger(__name__)

MAX_K = 10_000
MAX_OFFSET = 1_000_000
#: Candidates per wanted row for rerank="exact" and rerank="mmr".
DEFAULT_OVERFETCH = 10
MAX_OVERFETCH = 1_000
#: Longest text a string filter or query may hold (characters).
MAX_TEXT_CHARS = 100_000
ORIENTATIONS = ("landscape", "portrait", "square")
#: Facets of the facets query (a fixed list written in queries/facets.sql).
FACETS = ("camera_make", "city", "color", "country", "keyword", "photographer")
RERANKS = ("exact", "mmr")
#: Largest image file read for a query, bytes.
MAX_IMAGE_BYTES = 25 * 1024 * 1024
#: Columns of a photo result.
PHOTO_COLUMNS = ["photo_id", "distance", "description", "photo_url", "photo_image_url"]


# --- arguments ---------------------------------------------------------------------------


def _check_text(name: str, value, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise BadArgument(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise BadArgument(f"{name} contains a NUL character")
    if len(value) > MAX_TEXT_CHARS:
        raise BadArgument(f"{name} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    if not allow_empty and not value.strip():
        raise BadArgument(f"{name} is empty")
    return value


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise BadArgument(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def _check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadArgument(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise BadArgument(f"{name} must be a finite number from {low:g} to {high:g}, got {value!r}")
    return value


def _check_k(k: int) -> None:
    _check_int("k", k, 1, MAX_K)


def _check_date(name: str, value) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise BadArgument(f"{name} must be a date (YYYY-MM-DD), got {value!r}")


@dataclasses.dataclass(frozen=True)
class Filters:
    """Optional metadata filters, the same for every query kind; None (or ()) = no filter.

    Strings match exactly. Dates are UTC calendar days, both ends inclusive.

    Attributes:
        country, city: photo_location_country / photo_location_city.
        photographer: photographer_username.
        submitted_from, submitted_to: photo_submitted_at date range (date or 'YYYY-MM-DD').
        orientation: 'landscape' (width > height), 'portrait' (width < height) or 'square'.
        min_aspect_ratio, max_aspect_ratio: photo_aspect_ratio (width / height) range.
        min_width, min_height: pixels.
        min_views, min_downloads: stats_views / stats_downloads.
        featured: True only featured photos, False only the others.
        camera_make, camera_model: exif_camera_make / exif_camera_model.
        keywords_any: photos tagged with at least one of these keywords.
        keywords_all: photos tagged with every one of these keywords.
        color: dominant color, the colors.keyword of the photo's largest coverage (e.g. 'black').
        has_description: True only photos with a photo_description, False only without.
    """

    country: str | None = None
    city: str | None = None
    photographer: str | None = None
    submitted_from: dt.date | str | None = None
    submitted_to: dt.date | str | None = None
    orientation: str | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_width: int | None = None
    min_height: int | None = None
    min_views: int | None = None
    min_downloads: int | None = None
    featured: bool | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    keywords_any: Sequence[str] = ()
    keywords_all: Sequence[str] = ()
    color: str | None = None
    has_description: bool | None = None

    @classmethod
    def of(cls, filters: Filters | None = None, **values) -> Filters:
        """`filters` with `values` (keyword filters) applied on top, checked.

        Raises:
            BadArgument: an unknown filter name or a value of the wrong type or range.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BadArgument(f"unknown filter {', '.join(unknown)}; filters are {', '.join(sorted(names))}")
        if filters is not None and not isinstance(filters, Filters):
            raise BadArgument(f"filters must be a clipsql.search.Filters, got {type(filters).__name__}")
        base = filters or cls()
        return dataclasses.replace(base, **values).checked()

    def checked(self) -> Filters:
        """A copy with values normalized (dates parsed, keyword lists as tuples).

        Raises:
            BadArgument: a value of the wrong type or range.
        """
        out = {}
        for name in ("country", "city", "photographer", "camera_make", "camera_model", "color", "orientation"):
            value = getattr(self, name)
            out[name] = None if value is None else _check_text(name, value)
        if out["orientation"] is not None and out["orientation"] not in ORIENTATIONS:
            raise BadArgument(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {out['orientation']!r}")
        for name in ("submitted_from", "submitted_to"):
            value = getattr(self, name)
            out[name] = None if value is None else _check_date(name, value)
        if out["submitted_from"] and out["submitted_to"] and out["submitted_from"] > out["submitted_to"]:
            raise BadArgument(f"submitted_from {out['submitted_from']} is after submitted_to {out['submitted_to']}")
        for name in ("min_aspect_ratio", "max_aspect_ratio"):
            value = getattr(self, name)
            out[name] = None if value is None else _check_float(name, value, 0.0, 1e6)
        if (out["min_aspect_ratio"] is not None and out["max_aspect_ratio"] is not None
                and out["min_aspect_ratio"] > out["max_aspect_ratio"]):
            raise BadArgument("min_aspect_ratio is larger than max_aspect_ratio")
        for name, high in (("min_width", 2**32 - 1), ("min_height", 2**32 - 1),
                           ("min_views", 2**64 - 1), ("min_downloads", 2**64 - 1)):
            value = getattr(self, name)
            out[name] = None if value is None else _check_int(name, value, 0, high)
        for name in ("featured", "has_description"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise BadArgument(f"{name} must be True, False or None, got {value!r}")
            out[name] = None if value is None else bool(value)
        for name in ("keywords_any", "keywords_all"):
            value = getattr(self, name)
            if value is None:
                value = ()
            elif isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)):
                raise BadArgument(f"{name} must be a list of strings, got {type(value).__name__}")
            out[name] = tuple(_check_text(name, v) for v in value)
        return dataclasses.replace(self, **out)

    @property
    def active(self) -> bool:
        """True when at least one filter is set."""
        return any(v not in (None, ()) for v in dataclasses.asdict(self).values())

    def params(self) -> dict:
        """The filter parameters of the query files: {name: value}, NULL/[] for 'no filter'."""
        values = dataclasses.asdict(self)
        for name in ("keywords_any", "keywords_all"):
            values[name] = list(values[name])
        return values


@dataclasses.dataclass(frozen=True)
class _Options:
    k: int
    offset: int
    max_distance: float | None
    rerank: str | None
    mmr_lambda: float
    overfetch: int
    filters: Filters

    @classmethod
    def of(cls, k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values) -> _Options:
        _check_k(k)
        _check_int("offset", offset, 0, MAX_OFFSET)
        if max_distance is not None:
            max_distance = _check_float("max_distance", max_distance, 0.0, 2.0)
        if rerank is not None and rerank not in RERANKS:
            raise BadArgument(f"rerank must be one of {', '.join(RERANKS)} or None, got {rerank!r}")
        mmr_lambda = _check_float("mmr_lambda", mmr_lambda, 0.0, 1.0)
        _check_int("overfetch", overfetch, 1, MAX_OVERFETCH)
        return cls(int(k), int(offset), max_distance, rerank, mmr_lambda, int(overfetch),
                   Filters.of(filters, **filter_values))


# --- models and vectors ------------------------------------------------------------------


# The model of a search: clipsql.embed.cached_embedder, loaded once per process and shared with
# the SQL function clip_text_embedding (clipsql.udf). `_embedder` is its old name here (bench/).
_embedder = cached_embedder


def resolve_model(db: Store, model: str | None = None) -> tuple[str, str, int]:
    """(label, source, dim) of `model`, or by default of the newest complete model (one a
    refresh embedded every photo of the store with; queries/models.sql lists those first);
    while no model is complete, the newest model with stored vectors (a warning is logged).

    The answer is kept by the store for a few seconds (:meth:`clipsql.db.Store.remember`), so a
    session of searches does not pay the lookup query each time.

    Raises:
        NotFound: no such model in the store, or no model at all.
    """
    if model is not None:
        _check_text("model", model, allow_empty=False)
    return db.remember(("resolve_model", model), lambda: _resolve_model(db, model))


def _resolve_model(db: Store, model: str | None) -> tuple[str, str, int]:
    if model is not None:
        found = get_query("model_lookup").run(db, model=model)
        if not found.empty:
            row = found.iloc[0]
            return str(row["model"]), str(row["model_source"]), int(row["dim"])
    models = get_query("models").run(db, min_vectors=1)
    if models.empty:
        raise NotFound(f"{db.description} holds no vectors yet: run `clipsql refresh` first")
    if model is not None:
        raise NotFound(f"model {model[:200]!r} has no vectors in {db.description}; "
                       f"stored: {', '.join(models['model'])}")
    row = models.iloc[0]
    if int(row.get("complete", 1)) != 1:
        log.warning("no model in %s has finished a refresh yet; searching %s, whose vectors may not "
                    "cover every photo", db.description, row["model"])
    return str(row["model"]), str(row["model_source"]), int(row["dim"])


def check_query_vector(vector, dim: int) -> list[float]:
    """Validate a query vector: (dim,) finite numbers, non-zero, with a finite positive norm in
    float32. Returns it as a float list.

    Raises:
        BadArgument: wrong shape or dimension, NaN or infinite values, a zero vector, or a
            norm that overflows (e.g. 512 values of 1e38) or underflows to 0 in float32.
    """
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadArgument(f"query vector must be a sequence of {dim} numbers: {exc}") from None
    if array.ndim != 1 or array.shape[0] != dim:
        raise BadArgument(f"query vector must have shape ({dim},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise BadArgument("query vector holds NaN or infinite values")
    if not np.any(array):
        raise BadArgument("query vector is all zeros: it has no direction to search")
    with np.errstate(over="ignore", under="ignore"):
        norm = np.linalg.norm(array)  # in float32, as the engines compute cosine distances
    if not (np.isfinite(norm) and norm > 0):
        raise BadArgument(f"query vector has a norm that is not finite and positive in float32 ({float(norm)!r}): "
                          f"its values are too large (or too small) to search with; normalize it first")
    return array.tolist()


def photo_vectors(db: Store, photo_ids: Sequence[str], *, model: str) -> dict[str, np.ndarray]:
    """The stored vectors of `photo_ids` for `model`: {photo_id: (d,) float32}; absent ids left out."""
    frame = get_query("photo_vectors").run(db, model=model, photo_ids=[str(p) for p in photo_ids])
    return {pid: np.asarray(vec, dtype=np.float32) for pid, vec in zip(frame["photo_id"], frame["embedding"])}


def _photo_vector(db: Store, photo_id: str, model: str) -> np.ndarray:
    _check_text("photo_id", photo_id, allow_empty=False)
    found = photo_vectors(db, [photo_id], model=model)
    if photo_id not in found:
        raise NotFound(f"photo_id {photo_id!r} has no vector for model {model!r} in {db.description} "
                       f"(no such photo, or not embedded yet)")
    return found[photo_id]


# --- running the queries -----------------------------------------------------------------




def _run(db: Store, name: str, **values) -> pd.DataFrame:
    started = time.perf_counter()
    frame = get_query(name).run(db, **values)
    log.debug("query %s: %d rows in %.1f ms", name, len(frame), 1000 * (time.perf_counter() - started))
    return frame


def _photo_frame(frame: pd.DataFrame) -> pd.DataFrame:
    # Copies only what differs: a query's own result already has these columns, a fresh
    # index and float64 distances (the three copies made every time took search.nearest from
    # 8.2 to 10.7 ms p50 at 25k photos, cProfile of the bench store).
    if list(frame.columns) != PHOTO_COLUMNS:
        frame = frame[PHOTO_COLUMNS]
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        frame = frame.reset_index(drop=True)
    if frame["distance"].dtype != np.float64:
        frame = frame.assign(distance=frame["distance"].astype("float64"))
    return frame


def _page_params(opts: _Options, k: int, offset: int) -> dict:
    return dict(k=k, offset=offset, max_distance=opts.max_distance, **opts.filters.params())


def _search(db: Store, vector: list[float], model: str, opts: _Options, k: int, offset: int) -> pd.DataFrame:
    # search_photos_unfiltered is search_photos without the filter block (a test checks the
    # texts): the same rows when no filter is set, and ClickHouse plans it faster.
    if not opts.filters.active:
        name, values = "search_photos_unfiltered", dict(k=k, offset=offset, max_distance=opts.max_distance)
    else:
        name, values = "search_photos", _page_params(opts, k, offset)
    if snapshot.use_snapshot(db, model):
        try:
            return _run(db, snapshot.SNAPSHOT_QUERIES[name], query_vec=vector, model=model, **values)
        except Exception as exc:
            if not db.is_missing_table(exc):
                raise
            # The session lost its temporary table (a server session timed out, a DROP by hand).
            log.warning("the search snapshot is gone from this session; searching the tables")
            snapshot.discard(db)
    return _run(db, name, query_vec=vector, model=model, **values)


def _ranked(db: Store, vector: list[float], model: str, opts: _Options, *,
            similar_to: str | None = None) -> pd.DataFrame:
    """Run the photo query for `vector` (or for the stored vector of `similar_to`) with the
    options' filters, paging and re-ranking."""
    if opts.rerank is None:
        if similar_to is not None:
            frame = _run(db, "similar_photos", photo_id=similar_to, model=model, **_page_params(opts, opts.k, opts.offset))
        else:
            frame = _search(db, vector, model, opts, opts.k, opts.offset)
        return _photo_frame(frame)
    # Re-ranked kinds work on the first k + offset (+1 for the photo itself when similar).
    extra = 1 if similar_to is not None else 0
    wanted = opts.k + opts.offset + extra
    if opts.rerank == "exact" and not opts.filters.active:
        frame = _run(db, "search_photos_ann", query_vec=vector, model=model, k=min(wanted, MAX_K), offset=0,
                     candidates=max(opts.overfetch * wanted, wanted), max_distance=opts.max_distance)
    else:
        if opts.rerank == "exact":
            log.info("a filter is set: running the exact (pre-filtered) search instead of the index")
        fetch = wanted if opts.rerank == "exact" else max(opts.overfetch * wanted, wanted)
        frame = _search(db, vector, model, opts, min(fetch, MAX_K * MAX_OVERFETCH), 0)
    if similar_to is not None:
        frame = frame[frame["photo_id"] != similar_to]
    if opts.rerank == "mmr" and len(frame):
        vectors = photo_vectors(db, frame["photo_id"].tolist(), model=model)
        matrix = np.stack([vectors[p] for p in frame["photo_id"]])
        order = mmr_order(np.asarray(vector, np.float32), matrix, opts.k + opts.offset, opts.mmr_lambda)
        frame = frame.iloc[order]
    return _photo_frame(frame.iloc[opts.offset:opts.offset + opts.k])


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: indices of `k` rows of `candidates` in pick order.

    Each step picks the candidate maximizing ``lam * sim(q, c) - (1 - lam) * max sim(c, picked)``
    (cosine similarities of L2-normalized vectors); ties go to the earlier (nearer) row.

    Args:
        query: (d,) float32. candidates: (n, d) float32, nearest first. k: rows wanted.
        lam: 1.0 = relevance only (the distance order), 0.0 = diversity only.
    """
    q = query / np.linalg.norm(query)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True).clip(1e-12)
    relevance = c @ q
    n = len(c)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(available, lam * relevance - (1 - lam) * penalty, -np.inf)
        best = int(np.argmax(score))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, c @ c[best])
    return picked


# --- images ------------------------------------------------------------------------------


def load_image(source, *, max_pixels: int = DEFAULT_MAX_PIXELS):
    """An RGB PIL image from a file path, an http(s) URL, raw bytes or a PIL image.

    URLs are fetched with the download stage's session (timeouts, retries, byte limit).

    Raises:
        NotFound: a local file that does not exist.
        BadArgument: bytes that are not a usable image, or a URL that cannot be fetched.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "image bytes"
    else:
        text = os.fspath(source) if isinstance(source, os.PathLike) else source
        if not isinstance(text, str):
            raise BadArgument(f"an image must be a path, URL, bytes or PIL image, got {type(source).__name__}")
        _check_text("image", text, allow_empty=False)
        label = text
        if text.startswith(("http://", "https://")):
            data = _fetch_image(text)
        else:
            path = Path(text)
            try:
                if not path.is_file():
                    raise NotFound(f"image file {text[:200]!r} does not exist")
                if path.stat().st_size > MAX_IMAGE_BYTES:
                    raise BadArgument(f"image file {text[:200]!r} is over the limit of {MAX_IMAGE_BYTES} bytes")
                data = path.read_bytes()
            except OSError as exc:  # e.g. a name too long for the file system, no permission
                raise NotFound(f"cannot read image file {text[:200]!r}: {exc.strerror or exc}") from None
    try:
        return open_rgb(data, max_pixels=max_pixels)
    except InvalidImage as exc:
        raise BadArgument(f"{label[:200]}: not a usable image ({exc})") from None


def _fetch_image(url: str) -> bytes:
    from .download import DownloadOptions, download_photos

    options = DownloadOptions(workers=1, width=0, retries=2, read_timeout_s=15.0, total_timeout_s=60.0,
                              max_bytes=MAX_IMAGE_BYTES)
    with tempfile.TemporaryDirectory(prefix="clipsql-query-") as folder:
        result = download_photos([("query", url)], folder, options, progress=False)[0]
        if not result.ok:
            raise BadArgument(f"cannot fetch image {url[:200]}: {result.reason}: {result.detail}")
        return Path(result.path).read_bytes()


def crop_box(size: tuple[int, int], box: Sequence[float]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of `box` in an image of `size` (width, height).

    `box` is (left, top, right, bottom): fractions of the width and height when every value
    is within 0..1, else pixels.

    Raises:
        BadArgument: not 4 finite numbers, an empty box, or one outside the image.
    """
    if isinstance(box, str) or len(box) != 4:
        raise BadArgument(f"box must be 4 numbers (left, top, right, bottom), got {box!r}")
    values = [_check_float("box value", v, -1e9, 1e9) for v in box]
    width, height = size
    if all(0.0 <= v <= 1.0 for v in values):
        values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
    left, top, right, bottom = (int(round(v)) for v in values)
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise BadArgument(f"box {tuple(box)} is empty or outside the {width}x{height} image "
                          f"(pixels ({left}, {top}, {right}, {bottom}))")
    return left, top, right, bottom


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'left,top,right,bottom' -> 4 floats (the CLI's --box).

    Raises:
        BadArgument: not 4 comma-separated numbers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise BadArgument(f"box must be 'left,top,right,bottom' (pixels, or fractions 0..1), got {text!r}")
    return values  # type: ignore[return-value]


# --- combined terms ----------------------------------------------------------------------

_WEIGHT_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.+)$", re.DOTALL)


def parse_terms(query: str) -> list[tuple[str, float]]:
    """Split a combined query into (text, weight) terms.

    Grammar: words separated by spaces; `-term` has weight -1; `W:term` has weight W (a
    positive number) and `-W:term` weight -W; quotes group words into one term
    (`-"city lights"`, `2:"golden hour"`). Consecutive plain words form one phrase:
    ``a dog on a beach -people 2:sunset`` -> [('a dog on a beach', 1), ('people', -1),
    ('sunset', 2)].

    Raises:
        BadArgument: unbalanced quotes, an empty term or a zero weight.
    """
    _check_text("query", query)
    try:
        tokens = shlex.split(query)
    except ValueError as exc:
        raise BadArgument(f"cannot parse the query terms: {exc}") from None
    terms: list[tuple[str, float]] = []
    phrase: list[str] = []
    for token in tokens:
        sign, body = (-1.0, token[1:]) if token.startswith("-") and len(token) > 1 else (1.0, token)
        m = _WEIGHT_RE.match(body)
        if sign > 0 and not m:
            phrase.append(token)
            continue
        if phrase:
            terms.append((" ".join(phrase), 1.0))
            phrase = []
        weight = float(m.group(1)) if m else 1.0
        text = (m.group(2) if m else body).strip()
        if not text:
            raise BadArgument(f"term {token!r} has no text")
        if weight == 0:
            raise BadArgument(f"term {token!r} has weight 0")
        terms.append((text, sign * weight))
    if phrase:
        terms.append((" ".join(phrase), 1.0))
    return terms


def combine_vectors(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """sum(weight * vector), re-normalized to length 1: (d,) float32.

    Raises:
        BadArgument: no parts, or parts that cancel out (a zero sum).
    """
    if not parts:
        raise BadArgument("a combined query needs at least one text term or image")
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float64))
    for vector, weight in parts:
        total += weight * np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-6:
        raise BadArgument("the weighted terms cancel out: their sum has no direction to search")
    return (total / norm).astype(np.float32)


# --- public query kinds ------------------------------------------------------------------

def nearest(db: Store, query_vec, *, model: str, k: int = 10, offset: int = 0,
            max_distance: float | None = None, rerank: str | None = None, mmr_lambda: float = 0.5,
            overfetch: int = DEFAULT_OVERFETCH, filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Top-k photos nearest to `query_vec` ((d,) float32, L2-normalized) for `model`.

    Args:
        db: an open store.
        query_vec: the query embedding; checked before any SQL runs.
        model: stored model label (or its source).
        k, offset: the page (1..10,000 rows; offset 0..1,000,000).
        max_distance: only photos with a cosine distance <= this (0..2).
        rerank, mmr_lambda, overfetch: see the module docstring.
        filters / **filter_values: see :class:`Filters`.

    Returns:
        DataFrame photo_id, distance, description, photo_url, photo_image_url; closest first
        (MMR pick order with rerank='mmr').

    Raises:
        BadArgument: a bad vector, page, filter or rerank option.
        NotFound: no vectors for `model`.
    """
    # Checked against the store's width before any SQL runs (sql/*/001_core.sql fix it at 512).
    vector = check_query_vector(query_vec, STORE_DIM)
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    label, _, dim = resolve_model(db, model)
    if dim != STORE_DIM:  # a store holds STORE_DIM-wide vectors only; kept for stores built otherwise
        vector = check_query_vector(vector, dim)
    return _ranked(db, vector, label, opts)


def text(query: str, k: int = 10, *, offset: int = 0, max_distance: float | None = None,
         model: str | None = None, store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
         duckdb: str | os.PathLike | None = None, db: Store | None = None, device: str = "auto",
         rerank: str | None = None, mmr_lambda: float = 0.5, overfetch: int = DEFAULT_OVERFETCH,
         filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Text -> photos: the top-k photos whose image embedding is nearest to `query`'s.

    Args:
        query: the text, e.g. "a dog on a beach" (CLIP reads its first 77 tokens).
        k, offset: the page (1..10,000 rows; offset 0..1,000,000).
        max_distance: only photos with a cosine distance <= this (0..2).
        model: stored model label or source; default the newest model with vectors.
        store / clickhouse_url / duckdb / db: the backend (module docstring).
        device: where the text model runs.
        rerank, mmr_lambda, overfetch: see the module docstring.
        filters / **filter_values: see :class:`Filters`.

    Returns:
        DataFrame with columns photo_id, distance (cosine, 0..2), description, photo_url,
        photo_image_url; k rows at most, closest first.

    Raises:
        BadArgument: empty query, bad k or filter. NotFound: no vectors or unknown model.
    """
    _check_text("query text", query, allow_empty=False)
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, source, dim = resolve_model(opened, model)
        vector = cached_embedder(source, label, device).embed_texts([query])[0]
        return _ranked(opened, check_query_vector(vector, dim), label, opts)


def image(source, k: int = 10, *, offset: int = 0, max_distance: float | None = None, model: str | None = None,
          store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
          duckdb: str | os.PathLike | None = None, db: Store | None = None, device: str = "auto",
          rerank: str | None = None, mmr_lambda: float = 0.5, overfetch: int = DEFAULT_OVERFETCH,
          filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Image -> photos (reverse image search): photos nearest to the image's embedding.

    Args:
        source: an image file path, an http(s) URL, bytes or a PIL image.
        Others: as :func:`text`.

    Returns:
        As :func:`text`.

    Raises:
        NotFound: a missing image file, no vectors, unknown model.
        BadArgument: an unusable image or URL, bad k or filter.
    """
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    picture = load_image(source)
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, model_source, dim = resolve_model(opened, model)
        vector = cached_embedder(model_source, label, device).embed_images([picture])[0]
        return _ranked(opened, check_query_vector(vector, dim), label, opts)


def similar(photo_id: str, k: int = 10, *, offset: int = 0, max_distance: float | None = None,
            model: str | None = None, store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
            duckdb: str | os.PathLike | None = None, db: Store | None = None, rerank: str | None = None,
            mmr_lambda: float = 0.5, overfetch: int = DEFAULT_OVERFETCH, filters: Filters | None = None,
            **filter_values) -> pd.DataFrame:
    """Photos most similar to the indexed photo `photo_id` (the photo itself left out).

    Pure SQL (queries/similar_photos.sql): the query vector is the photo's stored vector, no
    model runs. With `rerank` the vector is read first and the re-ranked search runs on it.
    An unknown photo_id is looked up only when the query finds nothing (or fails).

    Returns:
        As :func:`text`.

    Raises:
        NotFound: `photo_id` has no vector for the model (unknown photo, or not embedded).
        BadArgument: bad k or filter.
    """
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    _check_text("photo_id", photo_id, allow_empty=False)
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, _, dim = resolve_model(opened, model)
        if opts.rerank is not None:
            vector = check_query_vector(_photo_vector(opened, photo_id, label), dim)
            return _ranked(opened, vector, label, opts, similar_to=photo_id)
        # queries/similar_photos.sql reads the photo's vector itself: no second round trip.
        # Only when it finds nothing is the vector looked up, to tell an unknown photo apart.
        try:
            frame = _ranked(opened, None, label, opts, similar_to=photo_id)
        except Exception:
            _photo_vector(opened, photo_id, label)  # NotFound for an unknown photo_id
            raise
        if frame.empty:
            _photo_vector(opened, photo_id, label)
        return frame


def combined(query: str = "", k: int = 10, *, images: Sequence = (), text_weight: float = 1.0,
             image_weight: float = 1.0, offset: int = 0, max_distance: float | None = None,
             model: str | None = None, store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
             duckdb: str | os.PathLike | None = None, db: Store | None = None, device: str = "auto",
             rerank: str | None = None, mmr_lambda: float = 0.5, overfetch: int = DEFAULT_OVERFETCH,
             filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Weighted text terms and images -> photos.

    The query vector is ``text_weight * sum(w_t * e(term)) + image_weight * sum(w_i * e(image))``
    over unit-length embeddings, re-normalized. Terms follow :func:`parse_terms`
    (``"beach -people 2:sunset"``).

    Args:
        query: the terms; may be empty when images are given.
        images: image sources (as :func:`image` takes), or (source, weight) pairs.
        text_weight, image_weight: weights of the two modalities (any finite numbers).
        Others: as :func:`text`.

    Returns:
        As :func:`text`.

    Raises:
        BadArgument: no terms and no images, bad terms or weights, terms that cancel out,
            an unusable image. NotFound: a missing image file, no vectors, unknown model.
    """
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    terms = parse_terms(query) if query else []
    text_weight = _check_float("text_weight", text_weight, -1e6, 1e6)
    image_weight = _check_float("image_weight", image_weight, -1e6, 1e6)
    pictures = []
    for item in images:
        src, weight = item if isinstance(item, tuple) else (item, 1.0)
        pictures.append((load_image(src), _check_float("image weight", weight, -1e6, 1e6)))
    if not terms and not pictures:
        raise BadArgument("a combined query needs at least one text term or image")
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, source, dim = resolve_model(opened, model)
        embedder = cached_embedder(source, label, device)
        parts = []
        if terms:
            vectors = embedder.embed_texts([t for t, _ in terms])
            parts += [(v, text_weight * w) for v, (_, w) in zip(vectors, terms)]
        if pictures:
            vectors = embedder.embed_images([p for p, _ in pictures])
            parts += [(v, image_weight * w) for v, (_, w) in zip(vectors, pictures)]
        vector = combine_vectors(parts)
        return _ranked(opened, check_query_vector(vector, dim), label, opts)


def crop(source=None, box: Sequence[float] = (0.0, 0.0, 1.0, 1.0), k: int = 10, *, photo_id: str | None = None,
         offset: int = 0, max_distance: float | None = None, model: str | None = None,
         store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
         duckdb: str | os.PathLike | None = None, db: Store | None = None, device: str = "auto",
         rerank: str | None = None, mmr_lambda: float = 0.5, overfetch: int = DEFAULT_OVERFETCH,
         filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """A region of an image -> photos (object query).

    Args:
        source: an image (as :func:`image` takes); or leave it None and give `photo_id`.
        box: (left, top, right, bottom), fractions 0..1 of the width and height when all four
            are within 0..1, else pixels.
        photo_id: crop an indexed photo, read from the store's image cache.
        Others: as :func:`text`.

    Returns:
        As :func:`text` (the photo itself may be among the results).

    Raises:
        BadArgument: both or neither of source and photo_id, a bad box, an unusable image.
        NotFound: a missing image file, or no cached image for `photo_id`.
    """
    opts = _Options.of(k, offset, max_distance, rerank, mmr_lambda, overfetch, filters, filter_values)
    if (source is None) == (photo_id is None):
        raise BadArgument("crop needs either an image or a photo_id, not both")
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        if photo_id is not None:
            _check_text("photo_id", photo_id, allow_empty=False)
            cached = cached_image(opened.image_dir, photo_id)
            if cached is None:
                raise NotFound(f"no cached image for photo_id {photo_id[:200]!r} in {opened.image_dir}")
            picture = load_image(cached)
        else:
            picture = load_image(source)
        region = picture.crop(crop_box(picture.size, box))
        label, model_source, dim = resolve_model(opened, model)
        vector = cached_embedder(model_source, label, device).embed_images([region])[0]
        return _ranked(opened, check_query_vector(vector, dim), label, opts)


def duplicates(max_distance: float = 0.05, k: int = 100, *, offset: int = 0, model: str | None = None,
               store: str | os.PathLike | None = None, clickhouse_url: str | None = None,
               duckdb: str | os.PathLike | None = None, db: Store | None = None,
               filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Near-duplicate pairs: photos whose vectors are within `max_distance` of each other.

    Exact and quadratic in the number of photos that pass the filters (queries/near_duplicates.sql).

    Args:
        max_distance: cosine distance threshold (0..2), e.g. 0.05.
        k, offset: the page of pairs. Others: as :func:`text`.

    Returns:
        DataFrame photo_id_a, photo_id_b (photo_id_a < photo_id_b), distance; closest first.

    Raises:
        BadArgument: bad threshold, k or filter. NotFound: no vectors or unknown model.
    """
    max_distance = _check_float("max_distance", max_distance, 0.0, 2.0)
    _check_k(k)
    _check_int("offset", offset, 0, MAX_OFFSET)
    flt = Filters.of(filters, **filter_values)
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, _, _ = resolve_model(opened, model)
        frame = _run(opened, "near_duplicates", model=label, max_distance=max_distance, k=int(k),
                     offset=int(offset), **flt.params())
    return frame[["photo_id_a", "photo_id_b", "distance"]].astype({"distance": "float64"}).reset_index(drop=True)


def facets(query: str | None = None, *, image=None, photo_id: str | None = None, query_vec=None,
           n: int = 100, per_facet: int = 10, by: Sequence[str] | None = None,
           max_distance: float | None = None, model: str | None = None, store: str | os.PathLike | None = None,
           clickhouse_url: str | None = None, duckdb: str | os.PathLike | None = None, db: Store | None = None,
           device: str = "auto", filters: Filters | None = None, **filter_values) -> pd.DataFrame:
    """Facet counts among the top-n photos of a query: how many per country, city,
    photographer, camera_make, keyword and dominant color.

    Exactly one query: `query` (text), `image`, `photo_id` (its stored vector; the photo
    itself counts) or `query_vec`.

    Args:
        n: how many of the nearest photos are counted (1..10,000).
        per_facet: values returned per facet, most frequent first (1..10,000).
        by: the facets wanted, from :data:`FACETS` (default all).
        Others: as :func:`text`.

    Returns:
        DataFrame facet, value, photos; by facet, then most photos first, then value.

    Raises:
        BadArgument: not exactly one query, a facet outside :data:`FACETS`, bad n or filter.
        NotFound: an unknown photo_id, no vectors or unknown model.
    """
    given = [x is not None for x in (query, image, photo_id, query_vec)]
    if sum(given) != 1:
        raise BadArgument("facets needs exactly one of query, image, photo_id or query_vec")
    if query_vec is not None:
        query_vec = check_query_vector(query_vec, STORE_DIM)
    _check_int("n", n, 1, MAX_K)
    _check_int("per_facet", per_facet, 1, MAX_K)
    if max_distance is not None:
        max_distance = _check_float("max_distance", max_distance, 0.0, 2.0)
    wanted = list(FACETS) if by is None else [by] if isinstance(by, str) else list(by)
    bad = [f for f in wanted if f not in FACETS]
    if bad or not wanted:
        raise BadArgument(f"facets must be among {', '.join(FACETS)}, got {wanted!r}")
    flt = Filters.of(filters, **filter_values)
    if query is not None:
        _check_text("query text", query, allow_empty=False)
    picture = load_image(image) if image is not None else None
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb) as opened:
        label, source, dim = resolve_model(opened, model)
        if query is not None:
            vector = cached_embedder(source, label, device).embed_texts([query])[0]
        elif picture is not None:
            vector = cached_embedder(source, label, device).embed_images([picture])[0]
        elif photo_id is not None:
            vector = _photo_vector(opened, photo_id, label)
        else:
            vector = query_vec
        frame = _run(opened, "facets", query_vec=check_query_vector(vector, dim), model=label, n=int(n),
                     per_facet=int(per_facet), max_distance=max_distance, **flt.params())
    frame = frame[frame["facet"].isin(wanted)][["facet", "value", "photos"]]
    return frame.astype({"photos": "int64"}).reset_index(drop=True)
