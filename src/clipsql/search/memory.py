"""Exact and near-exact top-k over an in-memory copy of one model's vectors.

:class:`InMemoryVectors` holds the photo_ids and the L2-normalized float32 vectors of one
model (any width), sorted by photo_id, and answers the question the exact SQL search
answers (``ORDER BY cosineDistance(embedding, q), photo_id LIMIT k OFFSET o``, with an
optional set of allowed rows and a distance bound) without going through an engine:

- The scan: every allowed row scored with one float32 matrix-vector product (numpy's BLAS;
  einsum over gathered subsets), every row within the float32 error bound of the cut
  re-scored in float64, ordered by (float32 distance, photo_id). Same ids, same order as the
  SQL search (tests/test_search_memory.py checks it against chdb and DuckDB); distances
  agree within 1e-6 (measured over 20 x top-100: chdb 2.2e-7, DuckDB 9.3e-7).
- The int8 first pass, built when faiss-cpu is installed (``pip install
  'clipsql[fast-search]'``) and the copy has at least :data:`FAST_MIN_ROWS` rows: an int8
  copy with one scale per dimension (a few large dimensions, which CLIP embeddings have, do
  not coarsen the others) in ``faiss.IndexScalarQuantizer`` QT_8bit_direct_signed indexes,
  one per thread over a slice of the rows, scored int8 query against int8 rows (faiss's
  SIMD kernels). It proposes :data:`MIN_CANDIDATES` rows or more, re-scored as in the scan,
  and a bound on the quantization error tells whether any row outside them could have
  reached the page (:attr:`MemoryHits.exact`).

:meth:`InMemoryVectors.search` with ``exact=True`` (the default) always returns the exact
page: the int8 page when the bound proves it exact, else the scan's. ``exact=False`` takes
the int8 page as it is (near-exact). On clustered 1M x 512 vectors the
bound proved every page of 2,000 candidates exact and the int8 page cost a fraction of the
scan (bench/search_memory.py has the figures). Without faiss the scan answers: slower,
never wrong.

Memory (1,000,000 x 512): the float32 copy 2.05 GB (n * d * 4 bytes), the int8 first pass
0.51 GB (n * d bytes), photo_ids n * (longest id in UTF-8) bytes (11 MB for Unsplash ids),
4 KB of scales. :attr:`InMemoryVectors.nbytes` reports what an instance holds.

An instance never changes after it is built (its arrays are read-only, attributes cannot
be set): deciding whether it still matches the store is the caller's business.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..constants import MAX_WIDTH
from ..errors import BadArgument
from .checks import MAX_OFFSET, check_float, check_int, check_k
from .vectors import check_query_vector

log = logging.getLogger(__name__)

#: Below this many rows ``first_pass="auto"`` builds no int8 copy (a quarter more memory) and
#: every search scans: the scan of 25,000 x 512 takes about 1 ms (DESIGN.md), of 200,000
#: ~10-25 ms by the same bandwidth, where the int8 page starts to save more than the API's
#: other costs (bench/search_memory.py).
FAST_MIN_ROWS = 200_000
#: The int8 pass proposes max(MIN_CANDIDATES, CANDIDATES_PER_ROW * (k + offset)) rows for the
#: exact re-score. bench/search_memory.py, clustered 1M x 512, top-10: recall@10 1.000 from
#: 100 candidates on, but the bound proves only 40-50% of pages exact at 100, 77-93% at 300,
#: 90-100% at 1,000 and 100% at 3,000, while the pass costs about the same (the scan, not
#: the heap or the re-score, dominates).
MIN_CANDIDATES = 2000
CANDIDATES_PER_ROW = 10
#: With fewer allowed rows than this share of the copy, the exact path gathers and scores
#: only them; with more, it scores every row and keeps the allowed ones (a gather of half
#: of a 2 GB copy costs more than the sequential scan of all of it).
SUBSET_SHARE = 1 / 8
#: Rows per block when the copy is built (normalized, quantized): bounds the temporary
#: arrays to ~32 MB at d = 512 (16,384 * 512 * 4 bytes).
BUILD_BLOCK_ROWS = 16_384
#: Rows gathered at once when a subset is scored: 4,096 * 512 * 4 bytes = 8 MB, which stays
#: in cache between the gather and the product.
GATHER_BLOCK_ROWS = 4096
#: Largest int8 code: QT_8bit_direct_signed stores round(x) + 128 in a byte, and symmetric
#: codes keep 0 at 0.
INT8_MAX = 127
FIRST_PASSES = ("auto", "int8", "none")


def _float32_dot_error(dim: int) -> float:
    """An upper bound on the error of a float32 dot product of two unit vectors of width
    `dim`, doubled (the cut compares two such products): gamma_d = d * 2**-24 (Higham,
    Accuracy and Stability of Numerical Algorithms, eq. 3.5, with sum |q_i v_i| <= 1 by
    Cauchy-Schwarz), plus 1e-6 for the stored rows' and the query's norms, which are 1 only
    to float32 precision."""
    return 2.0 * dim * 2.0**-24 + 1e-6


@dataclass(frozen=True)
class MemoryHits:
    """One page of an in-memory search, closest first, ties broken by photo_id.

    Attributes:
        photo_ids: the photos, as str.
        distances: (m,) float32 cosine distances (1 - cosine similarity, 0..2).
        rows: (m,) int64 row numbers in the :class:`InMemoryVectors` (its photo_id order).
        exact: True when the page is provably the exact search's page (always on the exact
            path; on the int8 path when the int8 error bound rules out every row that was
            not re-scored).
    """

    photo_ids: list[str]
    distances: np.ndarray
    rows: np.ndarray
    exact: bool

    def __len__(self) -> int:
        return len(self.photo_ids)

    def to_arrow(self) -> pa.Table:
        """The page as an Arrow table: photo_id (string), distance (float32)."""
        return pa.table(
            {
                "photo_id": pa.array(self.photo_ids, pa.string()),
                "distance": pa.array(self.distances, pa.float32()),
            }
        )


class InMemoryVectors:
    """The photo_ids and vectors of one model held in memory, sorted by photo_id, searched
    exactly (float32 BLAS scan + float64 re-score) or through an int8 first pass.

    Build with the constructor (numpy or Arrow ids, (n, d) vectors) or
    :meth:`from_arrow` (a table such as ``SELECT photo_id, embedding FROM photo_search
    WHERE model = ... ORDER BY photo_id``; input already sorted by photo_id saves a sort).

    Immutable: arrays are read-only and attributes cannot be set after construction.
    """

    __slots__ = (
        "_ids",
        "_vectors",
        "_model",
        "_scales",
        "_residual_max",
        "_shards",
        "_pool",
        "_built",
    )

    def __init__(
        self,
        photo_ids: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray,
        vectors: np.ndarray,
        *,
        model: str | None = None,
        first_pass: str = "auto",
        threads: int | None = None,
    ) -> None:
        """Copy, sort, check and normalize the vectors; build the int8 first pass if asked.

        Args:
            photo_ids: (n,) unique, non-null strings without NUL characters.
            vectors: (n, d) finite numbers, each row non-zero (L2-normalized float32 is
                what the store holds; other rows are normalized here, as cosineDistance
                divides by the norms).
            model: the model's label, named in error messages.
            first_pass: "auto" (int8 when faiss is installed and n >= FAST_MIN_ROWS),
                "int8" (always; needs faiss-cpu) or "none".
            threads: threads (and int8 shards) of the first pass; default the CPUs this
                process may run on.

        Raises:
            BadArgument: shapes that do not match, a null, duplicate or NUL-holding
                photo_id, a NaN, infinite or zero vector, a bad first_pass or threads, or
                first_pass="int8" without faiss-cpu.
        """
        started = time.perf_counter()
        if first_pass not in FIRST_PASSES:
            raise BadArgument(f"first_pass must be one of {', '.join(FIRST_PASSES)}, got {first_pass!r}")
        threads = _default_threads() if threads is None else check_int("threads", threads, 1, 1024)
        ids, order = _sorted_ids(photo_ids)
        array = np.asarray(vectors)
        if array.ndim != 2 or not 1 <= array.shape[1] <= MAX_WIDTH:
            raise BadArgument(f"vectors must be an (n, d) array with 1 <= d <= {MAX_WIDTH}, got shape {array.shape}")
        if array.shape[0] != len(ids):
            raise BadArgument(f"{len(ids)} photo_ids but {array.shape[0]} vectors")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise BadArgument(f"vectors must hold numbers, got dtype {array.dtype}")
        copy = np.empty(array.shape, dtype=np.float32)
        if order is None:
            copy[...] = array
        elif array.dtype == np.float32:
            np.take(array, order, axis=0, out=copy)
        else:
            copy[...] = array[order]
        self._finish_init(ids, copy, model, first_pass, threads, started)

    @classmethod
    def from_arrow(
        cls,
        table: pa.Table,
        *,
        id_column: str = "photo_id",
        vector_column: str = "embedding",
        dim: int | None = None,
        model: str | None = None,
        first_pass: str = "auto",
        threads: int | None = None,
    ) -> InMemoryVectors:
        """Build from an Arrow table of photo_ids and vectors (list, large_list or
        fixed_size_list of floats), one chunk at a time (no second full-size copy).

        Args:
            dim: the model's width; checked against every row, and needed for an empty table.
            The others: as for the constructor.

        Raises:
            BadArgument: a missing column, a null vector, a row of another width than `dim`
                (or than the first row), and what the constructor raises.
        """
        started = time.perf_counter()
        for name in (id_column, vector_column):
            if name not in table.column_names:
                raise BadArgument(f"table has no column {name!r} (columns: {', '.join(table.column_names)})")
        if first_pass not in FIRST_PASSES:
            raise BadArgument(f"first_pass must be one of {', '.join(FIRST_PASSES)}, got {first_pass!r}")
        threads = _default_threads() if threads is None else check_int("threads", threads, 1, 1024)
        ids, order = _sorted_ids(table.column(id_column))
        column = table.column(vector_column)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) and not (
            pa.types.is_fixed_size_list(column.type)
        ):
            raise BadArgument(f"column {vector_column!r} must be a list of floats, got {column.type}")
        if dim is None:
            if len(table) == 0:
                raise BadArgument("an empty table needs dim= (the model's width)")
            if not column[0].is_valid:
                raise BadArgument(f"{vector_column} of row 0 is null")
            dim = len(column[0].values)
        dim = check_int("dim", dim, 1, MAX_WIDTH)
        copy = np.empty((len(table), dim), dtype=np.float32)
        # Where each input row goes in the sorted copy.
        target = None
        if order is not None:
            target = np.empty_like(order)
            target[order] = np.arange(len(order))
        start = 0
        for chunk in column.chunks:
            if chunk.null_count:
                bad = int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0]) + start
                raise BadArgument(f"{vector_column} of row {bad} is null")
            lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != dim).any():
                bad = int(np.flatnonzero(lengths != dim)[0])
                raise BadArgument(f"{vector_column} of row {bad + start} has {lengths[bad]} values, expected {dim}")
            values = chunk.flatten()  # honours the chunk's offsets and slicing
            if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
                raise BadArgument(f"column {vector_column!r} must hold numbers, got {column.type}")
            block = values.to_numpy(zero_copy_only=False).reshape(len(chunk), dim)
            if target is None:
                copy[start : start + len(chunk)] = block
            else:
                copy[target[start : start + len(chunk)]] = block
            start += len(chunk)
        self = cls.__new__(cls)
        self._finish_init(ids, copy, model, first_pass, threads, started)
        return self

    def _finish_init(
        self, ids: np.ndarray, copy: np.ndarray, model: str | None, first_pass: str, threads: int, started: float
    ) -> None:
        """Normalize `copy` (sorted, owned, float32) in place, build the first pass, freeze."""
        object.__setattr__(self, "_built", False)
        self._ids = ids
        self._model = model
        _normalize_rows(copy, ids)
        copy.flags.writeable = False
        self._vectors = copy
        self._scales: np.ndarray | None = None
        self._residual_max = 0.0
        self._shards: list[tuple[int, Any]] = []
        self._pool: ThreadPoolExecutor | None = None
        normalized = time.perf_counter()
        n, dim = copy.shape
        wanted = first_pass == "int8" or (first_pass == "auto" and n >= FAST_MIN_ROWS)
        # Imported only when wanted: loading faiss costs ~0.3 s and its own OpenMP runtime.
        faiss = _import_faiss() if wanted else None
        if first_pass == "int8" and faiss is None:
            raise BadArgument("first_pass='int8' needs faiss-cpu: pip install 'clipsql[fast-search]'")
        if faiss is not None and n:
            self._build_int8(faiss, threads)
        elif wanted:
            log.info("faiss-cpu is not installed: the fast path of %d rows is the exact scan", n)
        log.info(
            "in-memory vectors%s: %d x %d, %s bytes (%s), normalized in %.0f ms, first pass in %.0f ms",
            f" of {model!r}" if model else "",
            n,
            dim,
            f"{sum(self.nbytes.values()):,}",
            ", ".join(f"{k} {v:,}" for k, v in self.nbytes.items()),
            1000 * (normalized - started),
            1000 * (time.perf_counter() - normalized),
        )
        object.__setattr__(self, "_built", True)

    def _build_int8(self, faiss: Any, threads: int) -> None:
        """The int8 first pass: per-dimension scales s_j = 127 / max_i |v_ij|, codes
        round(s_j v_ij) in `threads` faiss QT_8bit_direct_signed indexes (row slices), and
        the largest L2 error of a dequantized row (for :attr:`MemoryHits.exact`)."""
        vectors = self._vectors
        n, dim = vectors.shape
        peak = np.zeros(dim, dtype=np.float32)
        for lo in range(0, n, BUILD_BLOCK_ROWS):
            np.maximum(peak, np.abs(vectors[lo : lo + BUILD_BLOCK_ROWS]).max(axis=0), out=peak)
        # A dimension that is 0 in every row gets scale 1: its codes are 0 whatever the scale.
        scales = np.where(peak > 0, INT8_MAX / np.where(peak > 0, peak, 1), 1).astype(np.float32)
        shard_count = max(1, min(threads, n // BUILD_BLOCK_ROWS or 1))
        bounds = np.linspace(0, n, shard_count + 1).astype(np.int64)
        residual_max = 0.0
        shards = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index = faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
            )
            for start in range(int(lo), int(hi), BUILD_BLOCK_ROWS):
                block = vectors[start : min(int(hi), start + BUILD_BLOCK_ROWS)]
                # Whole numbers in -127..127: faiss stores them exactly (code = x + 128).
                codes = np.rint(block * scales)
                index.add(np.ascontiguousarray(codes, dtype=np.float32))
                error = block - codes / scales
                residual_max = max(residual_max, float(np.sqrt(np.einsum("ij,ij->i", error, error).max())))
            shards.append((int(lo), index))
        scales.flags.writeable = False
        self._scales = scales
        self._residual_max = residual_max
        self._shards = shards
        self._pool = ThreadPoolExecutor(len(shards), thread_name_prefix="clipsql-int8") if len(shards) > 1 else None

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_built", False):
            raise AttributeError(f"{type(self).__name__} is immutable: build a new one instead")
        object.__setattr__(self, name, value)

    # -- what it holds -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        model = f" model={self._model!r}" if self._model else ""
        return f"<InMemoryVectors{model} n={len(self)} dim={self.dim} first_pass={self.first_pass}>"

    @property
    def dim(self) -> int:
        """The vectors' width d."""
        return int(self._vectors.shape[1])

    @property
    def model(self) -> str | None:
        """The model's label, when given."""
        return self._model

    @property
    def first_pass(self) -> str:
        """The first pass built: "int8", or "none" (the fast path is then the exact scan)."""
        return "int8" if self._shards else "none"

    @property
    def vectors(self) -> np.ndarray:
        """(n, d) float32, L2-normalized, read-only, in photo_id order."""
        return self._vectors

    @property
    def photo_ids(self) -> np.ndarray:
        """(n,) bytes (UTF-8, NUL-padded numpy 'S'), ascending, read-only."""
        return self._ids

    @property
    def nbytes(self) -> dict[str, int]:
        """Bytes held, by part: vectors (float32 copy), int8 (first-pass codes), photo_ids."""
        int8 = sum(index.ntotal * index.code_size for _, index in self._shards)
        scales = 0 if self._scales is None else self._scales.nbytes
        return {"vectors": self._vectors.nbytes, "int8": int8 + scales, "photo_ids": self._ids.nbytes}

    def rows_of(self, photo_ids: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The rows of `photo_ids` (e.g. the photos a metadata filter passes), as the sorted
        (m,) int64 index array :meth:`search` takes as `allowed`; ids not held are left out.

        Binary search over the sorted ids: ~6 ms for 10,000 ids among 1,000,000 (measured).
        """
        needles = _utf8_fixed(_string_array(photo_ids, "photo_ids"))
        if not len(needles) or not len(self._ids):
            return np.empty(0, dtype=np.int64)
        width = self._ids.dtype.itemsize
        if needles.dtype.itemsize > width:
            # Longer than every held id: cannot match, and a cast would truncate it into one.
            needles = needles[np.char.str_len(needles) <= width]
        needles = needles.astype(self._ids.dtype)
        at = np.searchsorted(self._ids, needles)
        inside = at < len(self._ids)
        at = at[inside]
        return np.unique(at[self._ids[at] == needles[inside]]).astype(np.int64)

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        query,
        k: int = 10,
        *,
        offset: int = 0,
        max_distance: float | None = None,
        allowed: np.ndarray | Sequence[int] | None = None,
        exact: bool = True,
        candidates: int | None = None,
    ) -> MemoryHits:
        """The page `offset` .. `offset + k` of the allowed rows nearest to `query` by cosine
        distance, closest first, ties broken by photo_id: the rows of the exact SQL search.

        With the int8 first pass built, it proposes `candidates` rows, re-scored exactly; the
        page is returned when the quantization error bound proves it exact, or when `exact`
        is False (near-exact: see :attr:`MemoryHits.exact`). Otherwise, and without the
        first pass, every allowed row is scored (float32 BLAS, float64 at the cut).

        Args:
            query: (d,) numbers, non-zero; normalized here (as cosineDistance does).
            k: rows of the page, 1..MAX_K.
            offset: rows skipped first, 0..MAX_OFFSET.
            max_distance: only rows with a float32 distance <= this (0..2); None: no bound.
            allowed: the rows that may be returned: an (n,) bool mask or an index array of
                rows (see :meth:`rows_of`); None: all rows.
            exact: True (default): the page is always the exact one (an int8 page that the
                bound does not prove is discarded and every row scored). False: the int8
                page as it is, when the first pass ran.
            candidates: rows the int8 pass proposes; default
                max(MIN_CANDIDATES, CANDIDATES_PER_ROW * (k + offset)).

        Returns:
            :class:`MemoryHits`; fewer than k rows when fewer are allowed or within
            `max_distance`.

        Raises:
            BadArgument: a query of another width, NaN, infinite or zero; a bad k, offset,
                max_distance, candidates or allowed (wrong length or dtype, rows out of range).
        """
        q = np.asarray(check_query_vector(query, self.dim, model=self._model), dtype=np.float64)
        k = check_k(k)
        offset = check_int("offset", offset, 0, MAX_OFFSET)
        if max_distance is not None:
            max_distance = check_float("max_distance", max_distance, 0.0, 2.0)
        if candidates is not None:
            candidates = check_int("candidates", candidates, 1, max(1, len(self)))
        rows = self._allowed_rows(allowed)
        q /= np.linalg.norm(q)
        count = len(self) if rows is None else len(rows)
        if count == 0:
            return _empty()
        if self._shards:
            pool = candidates or max(MIN_CANDIDATES, CANDIDATES_PER_ROW * (k + offset))
            # A pool near the allowed count, or allowed rows few enough that the scan gathers
            # only them (1% of 1M: a few ms): the int8 pass would not save anything.
            few = rows is not None and len(rows) < SUBSET_SHARE * len(self)
            if pool < count // 4 and not few:
                hits = self._search_int8(q, k, offset, max_distance, rows, pool)
                if hits.exact or not exact:
                    return hits
                log.debug("int8 page of %d candidates not proven exact: scanning every row", pool)
        return self._search_exact(q, k, offset, max_distance, rows)

    def _allowed_rows(self, allowed) -> np.ndarray | None:
        """`allowed` as sorted unique int64 rows, or None for every row."""
        if allowed is None:
            return None
        array = np.asarray(allowed)
        n = len(self)
        if array.dtype == np.bool_:
            if array.shape != (n,):
                raise BadArgument(f"allowed mask must have shape ({n},), got {array.shape}")
            return np.flatnonzero(array)
        if array.size == 0:
            return np.empty(0, dtype=np.int64)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise BadArgument(f"allowed must be an (n,) bool mask or a 1-d array of row numbers, got {array.dtype}")
        if array.min() < 0 or array.max() >= n:
            raise BadArgument(f"allowed rows must be within 0..{n - 1}, got {array.min()}..{array.max()}")
        return np.unique(array.astype(np.int64))

    def _scores(self, q32: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Float32 scores (dot products) of `rows` (None: every row), in their order."""
        vectors = self._vectors
        if rows is None:
            return vectors @ q32  # BLAS: the one sequential pass, on every core
        if len(rows) >= SUBSET_SHARE * len(self):
            return (vectors @ q32)[rows]
        # Gathered in cache-sized blocks and scored with einsum, not BLAS: OpenBLAS splits
        # small products across threads, which wait for each other on a busy machine
        # (measured: 1,000 x 512 took 10 ms through BLAS at load 6, 0.1 ms with einsum).
        scores = np.empty(len(rows), dtype=np.float32)
        for lo in range(0, len(rows), GATHER_BLOCK_ROWS):
            scores[lo : lo + GATHER_BLOCK_ROWS] = np.einsum("ij,j->i", vectors[rows[lo : lo + GATHER_BLOCK_ROWS]], q32)
        return scores

    def _near_cut(self, scores: np.ndarray, need: int, max_distance: float | None) -> np.ndarray:
        """Indices of the `scores` (float32) that can reach the first `need` places or pass
        `max_distance`: all within the float32 error bound of the need-th best score (and of
        1 - max_distance), so that the float64 re-score decides ties and near-ties."""
        cut = -np.inf
        if need < len(scores):
            cut = float(np.partition(scores, len(scores) - need)[len(scores) - need])
        if max_distance is not None:
            cut = max(cut, 1.0 - max_distance)
        if not np.isfinite(cut):
            return np.arange(len(scores))
        return np.flatnonzero(scores >= cut - _float32_dot_error(self.dim))

    def _search_exact(
        self, q: np.ndarray, k: int, offset: int, max_distance: float | None, rows: np.ndarray | None
    ) -> MemoryHits:
        """Every allowed row scored in float32; those near the cut re-scored in float64."""
        scores = self._scores(q.astype(np.float32), rows)
        picked = self._near_cut(scores, k + offset, max_distance)
        photo_ids, distances, page_rows, _ = self._page(
            q, picked if rows is None else rows[picked], k, offset, max_distance
        )
        return MemoryHits(photo_ids, distances, page_rows, exact=True)

    def _search_int8(
        self, q: np.ndarray, k: int, offset: int, max_distance: float | None, rows: np.ndarray | None, pool: int
    ) -> MemoryHits:
        """The int8 pass over every shard (in threads; faiss releases the GIL) proposes
        `pool` rows, which are re-scored as in the exact scan; the page is proven exact when
        no row outside the pool can reach it (see the bound below)."""
        faiss = _import_faiss()  # not None: the shards were built with it
        assert self._scales is not None
        # faiss quantizes the query too (int8 . int8; it truncates fractions): hand it whole
        # numbers, so that its score is exactly qcode . code on every kernel. With
        # qcode_j = round(alpha * q_j / s_j), qcode . code / alpha = q_hat . v_hat, the dot
        # product of the dequantized query (q_hat_j = qcode_j * s_j / alpha) and row.
        scales = self._scales.astype(np.float64)
        ratio = q / scales
        alpha = INT8_MAX / float(np.abs(ratio).max())
        qcode = np.rint(alpha * ratio)
        query = qcode.astype(np.float32)[None, :]
        mask = None
        if rows is not None:
            mask = np.zeros(len(self), dtype=bool)
            mask[rows] = True

        def scan(shard: tuple[int, Any]) -> tuple[np.ndarray, np.ndarray]:
            lo, index = shard
            params = None
            if mask is not None:
                # Kept alive until search returns: the selector only points at it.
                bits = np.packbits(mask[lo : lo + index.ntotal], bitorder="little")
                params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits)))
            scores, found = index.search(query, min(pool, index.ntotal), params=params)
            keep = found[0] >= 0
            return scores[0][keep], found[0][keep] + lo

        parts = list(self._pool.map(scan, self._shards)) if self._pool else [scan(s) for s in self._shards]
        approx = np.concatenate([p[0] for p in parts]) / alpha
        proposed = np.concatenate([p[1] for p in parts])
        # A shard that returned fewer rows than asked returned every allowed row it holds.
        complete = all(len(p[1]) < pool for p in parts)
        if len(proposed) > pool:
            top = np.argpartition(approx, len(approx) - pool)[len(approx) - pool :]
            approx, proposed = approx[top], proposed[top]
        need = k + offset
        picked = proposed[self._near_cut(self._scores(q.astype(np.float32), proposed), need, max_distance)]
        photo_ids, distances, page_rows, ranked = self._page(q, picked, k, offset, max_distance)
        # Every row outside the pool has an int8 score <= the pool's lowest, and its true
        # score exceeds its int8 score by at most the error bound: if that stays below the
        # page's last needed score, no such row could have entered the page. The bound:
        # q.v - q_hat.v_hat = q.(v - v_hat) + (q - q_hat).v_hat, each term bounded by
        # Cauchy-Schwarz or component-wise (|v_ij - v_hat_ij| <= 0.5 / s_j, |v_hat_ij| <= 127 / s_j).
        row_error = min(self._residual_max, 0.5 * float(np.abs(q) @ (1 / scales)))
        query_error = q - qcode * scales / alpha
        query_term = min(
            float(np.linalg.norm(query_error)) * (1 + self._residual_max),
            float(np.abs(query_error) @ (INT8_MAX / scales)),
        )
        reach = float(approx.min()) + row_error + query_term + _float32_dot_error(self.dim)
        if len(ranked) >= need:
            floor = 1.0 - float(ranked[need - 1])
        else:  # fewer rows than the page within max_distance: any row outside could join
            floor = 1.0 - (max_distance if max_distance is not None else 2.0)
        return MemoryHits(photo_ids, distances, page_rows, exact=complete or reach < floor)

    def _page(
        self, q: np.ndarray, picked: np.ndarray, k: int, offset: int, max_distance: float | None
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Re-score rows `picked` in float64, keep those within `max_distance`, order them by
        (float32 distance, photo_id) and cut the page. Returns photo_ids, distances, rows of
        the page and every kept distance in order."""
        picked = np.asarray(picked, dtype=np.int64)
        distances = np.empty(len(picked), dtype=np.float32)
        # In blocks: ties can make `picked` large (a copy of identical vectors picks them all).
        # einsum, not BLAS: float64 gemv sums a row differently by where it sits in the
        # block, so identical vectors could get distances one float32 step apart and lose
        # the tie that photo_id must break; einsum runs the same loop for every row.
        for lo in range(0, len(picked), GATHER_BLOCK_ROWS):
            block = self._vectors[picked[lo : lo + GATHER_BLOCK_ROWS]].astype(np.float64)
            distances[lo : lo + GATHER_BLOCK_ROWS] = 1.0 - np.einsum("ij,j->i", block, q)
        if max_distance is not None:
            within = distances <= np.float32(max_distance)  # a Float32 bound, as the SQL binds it
            picked, distances = picked[within], distances[within]
        # Rows are in photo_id order, so the row number breaks ties as photo_id does.
        order = np.lexsort((picked, distances))
        ranked = distances[order]
        chosen = order[offset : offset + k]
        rows = picked[chosen]
        photo_ids = [raw.decode("utf-8") for raw in self._ids[rows].tolist()]
        return photo_ids, distances[chosen], rows, ranked


def _empty() -> MemoryHits:
    return MemoryHits([], np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64), exact=True)


def _default_threads() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _import_faiss() -> Any:
    """faiss, or None when faiss-cpu is not installed (the optional extra fast-search)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _string_array(values, name: str) -> pa.Array:
    """`values` as one Arrow string array with no nulls and no NUL characters.

    Raises:
        BadArgument: not strings, a null, or a NUL character.
    """
    try:
        if isinstance(values, pa.ChunkedArray):
            array = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        elif isinstance(values, pa.Array):
            array = values
        else:
            array = pa.array(np.asarray(values, dtype=object) if isinstance(values, np.ndarray) else list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise BadArgument(f"{name} must be strings: {exc}") from None
    if len(array) == 0:
        return pa.array([], pa.string())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise BadArgument(f"{name} must be strings, got {array.type}")
    if array.null_count:
        raise BadArgument(f"{name} holds {array.null_count} nulls")
    if pc.any(pc.match_substring(array, "\x00")).as_py():
        raise BadArgument(f"{name} holds a NUL character")
    return array


def _utf8_fixed(array: pa.Array) -> np.ndarray:
    """Arrow strings as a numpy 'S' array (UTF-8 bytes, NUL-padded to the longest), in
    Arrow (~60 ms per million ids; numpy's own str -> bytes conversion takes seconds).
    Byte order is ClickHouse's String order, so sorting it sorts as ``ORDER BY photo_id``."""
    if len(array) == 0:
        return np.empty(0, dtype="S1")
    binary = array.cast(pa.large_binary())
    lengths = pc.binary_length(binary)
    width = max(1, int(pc.max(lengths).as_py()))
    padding = pc.binary_repeat(pa.scalar(b"\x00", pa.large_binary()), pc.subtract(width, lengths))
    fixed = pc.binary_join_element_wise(binary, padding, pa.scalar(b"", pa.large_binary())).cast(pa.binary(width))
    data = fixed.buffers()[1]
    return np.frombuffer(data, dtype=f"S{width}", count=len(fixed), offset=fixed.offset * width).copy()


def _sorted_ids(photo_ids) -> tuple[np.ndarray, np.ndarray | None]:
    """The ids as a read-only ascending 'S' array, and the order that sorts the input (None
    when it was sorted already).

    Raises:
        BadArgument: not strings, a null or NUL character, or a duplicate photo_id.
    """
    ids = _utf8_fixed(_string_array(photo_ids, "photo_ids"))
    order = None
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        repeated = np.flatnonzero(ids[1:] == ids[:-1])
        if len(repeated):
            raise BadArgument(f"photo_id {ids[repeated[0]].decode('utf-8')!r} occurs more than once")
    ids.flags.writeable = False
    return ids, order


def _normalize_rows(vectors: np.ndarray, ids: np.ndarray) -> None:
    """Divide each row of `vectors` by its L2 norm (computed in float64), in place.

    Raises:
        BadArgument: a row with a NaN or infinite value, all zeros, or a norm whose square
            overflows or underflows float32 (the engines compute cosineDistance in float32,
            where such a row's distance is NaN; the query gets the same check).
    """
    float32 = np.finfo(np.float32)
    for lo in range(0, len(vectors), BUILD_BLOCK_ROWS):
        block = vectors[lo : lo + BUILD_BLOCK_ROWS]
        with np.errstate(over="ignore", invalid="ignore"):
            squares = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        bad = np.flatnonzero(~((squares >= float(float32.tiny)) & (squares <= float(float32.max))))
        if len(bad):
            photo_id = ids[lo + bad[0]].decode("utf-8")
            square = squares[bad[0]]
            what = (
                "all zeros"
                if square == 0
                else "NaN or infinite values"
                if not np.isfinite(square)
                else f"values too large or too small for a float32 cosine (norm {np.sqrt(square):.3g})"
            )
            raise BadArgument(f"the vector of photo_id {photo_id!r} holds {what}")
        block /= np.sqrt(squares).astype(np.float32)[:, None]
