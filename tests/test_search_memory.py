"""clipsql.search.memory: the in-memory top-k gives the exact search's rows.

Every case is checked against a brute-force reference written the way the SQL is: cosine
distance as float32, rows ordered by (distance, photo_id), the page cut after any
`max_distance` bound and allowed-row filter. Widths 512, 768 and 3; planted ties (identical
vectors under ids given out of order); the int8 first pass (faiss-cpu, skipped without it)
for recall on clustered vectors and for the exactness it claims; and the real SQL search
on chdb and DuckDB over the same vectors (tests/searchdata.py).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pyarrow as pa
import pytest

import searchdata
from clipsql import search
from clipsql.db import open_store
from clipsql.errors import BadArgument
from clipsql.search.memory import InMemoryVectors, MemoryHits

HAVE_FAISS = importlib.util.find_spec("faiss") is not None  # the optional extra fast-search
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu (extra fast-search) is not installed")


def clustered(n: int, dim: int, seed: int, clusters: int = 40, spread: float = 0.6) -> np.ndarray:
    """(n, dim) float32 unit vectors: a shared direction + cluster centres + noise (as real
    embeddings are clustered; uniform random vectors make every pass look worse)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shared = rng.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    out = centres[rng.integers(0, clusters, n)] + 0.8 * shared
    out += spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _id_rank(ids: tuple[str, ...]) -> np.ndarray:
    """Each id's place in photo_id order: UTF-8 byte order, as ClickHouse compares Strings."""
    return np.argsort(np.argsort(np.array([pid.encode() for pid in ids], dtype=object)))


def reference(vectors, ids, q, k, offset=0, max_distance=None, allowed=None) -> list[tuple[str, float]]:
    """Brute force as the SQL: float32 cosine distance, ORDER BY distance, photo_id, bound, page."""
    v = np.asarray(vectors, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = np.asarray(q, dtype=np.float64)
    distances = (1 - v @ (q / np.linalg.norm(q))).astype(np.float32)
    rows = np.arange(len(ids)) if allowed is None else np.asarray(allowed, dtype=np.int64)
    if max_distance is not None:
        rows = rows[distances[rows] <= np.float32(max_distance)]
    id_rank = _id_rank(tuple(ids))
    order = rows[np.lexsort((id_rank[rows], distances[rows]))][offset : offset + k]
    return [(ids[i], float(distances[i])) for i in order]


def check(hits: MemoryHits, expected: list[tuple[str, float]]) -> None:
    assert hits.photo_ids == [pid for pid, _ in expected]
    assert hits.distances.dtype == np.float32
    if expected:
        assert np.max(np.abs(hits.distances - np.array([d for _, d in expected]))) <= 1e-5
    assert len(hits.rows) == len(hits)


@pytest.fixture(scope="module", params=[512, 768, 3])
def dataset(request):
    """(ids in input order, vectors, InMemoryVectors) of 2,000 rows of width 512, 768 or 3,
    with ties: rows 10, 11, 12 hold one vector under ids given out of order."""
    dim = request.param
    n = 2000
    rng = np.random.default_rng(dim)
    vectors = clustered(n, dim, seed=dim)
    vectors[11] = vectors[10]
    vectors[12] = vectors[10]
    ids = [f"p{i:05d}" for i in rng.permutation(n)]  # unsorted input: the copy sorts it
    ids[10], ids[11], ids[12] = "tie-b", "tie-c", "tie-a"
    return ids, vectors, InMemoryVectors(ids, vectors, first_pass="none")


def unit(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def queries(vectors, count, seed):
    rng = np.random.default_rng(seed)
    out = vectors[rng.integers(0, len(vectors), count)] + 0.3 * rng.standard_normal((count, vectors.shape[1]))
    return out.astype(np.float32)


CASES = [
    dict(k=10),
    dict(k=7, offset=5),
    dict(k=1, offset=1999),
    dict(k=5, offset=2000),  # past the end: empty
    dict(k=3000),  # more than n: every row
    dict(k=50, max_distance=0.3),
    dict(k=10, max_distance=0.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_exact_path_equals_brute_force(dataset, case):
    ids, vectors, store = dataset
    for q in queries(vectors, 5, seed=len(case)):
        check(store.search(q, **case), reference(vectors, ids, q, **case))


def test_ties_are_broken_by_photo_id(dataset):
    ids, vectors, store = dataset
    hits = store.search(vectors[10], 3)
    assert hits.photo_ids == ["tie-a", "tie-b", "tie-c"]
    assert len(set(hits.distances.tolist())) == 1
    # A page boundary inside the tie.
    assert store.search(vectors[10], 2, offset=1).photo_ids == ["tie-b", "tie-c"]
    check(store.search(vectors[10], 2, offset=1), reference(vectors, ids, vectors[10], 2, offset=1))


@pytest.mark.parametrize("share", [0.01, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("form", ["mask", "rows", "photo_ids"])
def test_allowed_rows(dataset, share, form):
    ids, vectors, store = dataset
    rng = np.random.default_rng(int(share * 100))
    chosen = sorted({i for i in range(len(ids)) if rng.random() < share} | {10, 12})
    if form == "mask":
        allowed = np.zeros(len(ids), dtype=bool)
        allowed[store.rows_of([ids[i] for i in chosen])] = True
    elif form == "rows":
        allowed = store.rows_of([ids[i] for i in chosen])[::-1].copy()  # any order, repeats allowed
        allowed = np.concatenate([allowed, allowed[:3]])
    else:
        allowed = store.rows_of(pa.array([ids[i] for i in chosen]))
    for q in [*queries(vectors, 3, seed=7), vectors[10]]:
        for case in (dict(k=10), dict(k=4, offset=3, max_distance=0.5)):
            check(store.search(q, allowed=allowed, **case), reference(vectors, ids, q, allowed=chosen, **case))


def test_empty_allowed(dataset):
    ids, vectors, store = dataset
    for allowed in (np.zeros(len(ids), dtype=bool), np.array([], dtype=np.int64), []):
        hits = store.search(vectors[0], 10, allowed=allowed)
        assert len(hits) == 0 and hits.exact
        assert hits.to_arrow().schema.names == ["photo_id", "distance"]


def test_rows_of():
    ids = ["b", "é", "a", "z", "ab"]
    store = InMemoryVectors(ids, np.eye(5, dtype=np.float32))
    # UTF-8 byte order, as ClickHouse orders Strings: 'é' (0xC3 0xA9) after 'z'.
    assert [raw.decode() for raw in store.photo_ids.tolist()] == ["a", "ab", "b", "z", "é"]
    assert store.rows_of(["z", "a", "nope", "a", "abc-longer-than-any-id"]).tolist() == [0, 3]
    assert store.rows_of([]).tolist() == []
    assert store.search(np.eye(5, dtype=np.float32)[1], 1).photo_ids == ["é"]


def test_from_arrow_matches_the_constructor(dataset):
    ids, vectors, store = dataset
    dim = vectors.shape[1]
    values = pa.array(vectors.ravel())
    as_lists = pa.ListArray.from_arrays(pa.array(np.arange(0, len(ids) * dim + 1, dim, dtype=np.int32)), values)
    fixed = pa.FixedSizeListArray.from_arrays(values, dim)
    half = len(ids) // 2
    tables = [
        pa.table({"photo_id": ids, "embedding": as_lists}),
        pa.table({"photo_id": ids, "embedding": fixed}),
        # Two chunks, float64 values, a sliced (offset) second chunk.
        pa.Table.from_batches(
            [
                pa.record_batch({"photo_id": ids[:half], "embedding": as_lists[:half].cast(pa.list_(pa.float64()))}),
                pa.record_batch({"photo_id": ids[half:], "embedding": as_lists[half:].cast(pa.list_(pa.float64()))}),
            ]
        ),
    ]
    q = queries(vectors, 1, seed=3)[0]
    expected = store.search(q, 20)
    for table in tables:
        built = InMemoryVectors.from_arrow(table, first_pass="none")
        assert built.dim == dim and len(built) == len(ids)
        np.testing.assert_array_equal(built.vectors, store.vectors)
        hits = built.search(q, 20)
        assert hits.photo_ids == expected.photo_ids
        np.testing.assert_array_equal(hits.distances, expected.distances)


def test_stored_vectors_need_not_be_unit_length(dataset):
    ids, vectors, store = dataset
    scaled = InMemoryVectors(ids, vectors * np.linspace(0.5, 3, len(ids), dtype=np.float32)[:, None])
    q = 7 * queries(vectors, 1, seed=4)[0]  # cosineDistance does not need a unit query either
    check(scaled.search(q, 10), reference(vectors, ids, q, 10))


def test_empty_store():
    store = InMemoryVectors.from_arrow(
        pa.table({"photo_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}), dim=4
    )
    assert len(store) == 0 and store.dim == 4
    assert len(store.search([1, 0, 0, 0], 10)) == 0
    assert len(store.search([1, 0, 0, 0], 10, exact=False)) == 0


def test_immutable(dataset):
    _, _, store = dataset
    with pytest.raises(AttributeError, match="immutable"):
        store._vectors = None
    with pytest.raises(ValueError):
        store.vectors[0, 0] = 1.0
    with pytest.raises(ValueError):
        store.photo_ids[0] = b"x"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(query=np.ones(511)), "has 511 values, but model 'm' stores 512-dim vectors"),
        (dict(query=np.full(512, np.nan)), "NaN or infinite"),
        (dict(query=np.zeros(512)), "all zeros"),
        (dict(query=np.ones((2, 512))), "1-d array"),
        (dict(query="abc"), "query vector"),
        (dict(k=0), "k must be an integer"),
        (dict(k=2.5), "k must be an integer"),
        (dict(offset=-1), "offset must be an integer"),
        (dict(max_distance=2.5), "max_distance must be a finite number from 0 to 2"),
        (dict(max_distance=float("nan")), "max_distance"),
        (dict(candidates=0), "candidates"),
        (dict(allowed=np.ones(10, dtype=bool)), r"allowed mask must have shape \(100,\)"),
        (dict(allowed=[0, 100]), r"allowed rows must be within 0..99"),
        (dict(allowed=[-1]), r"allowed rows must be within 0..99"),
        (dict(allowed=np.array([0.5, 1.0])), "bool mask or a 1-d array of row numbers"),
    ],
)
def test_bad_search_arguments(kwargs, message):
    store = InMemoryVectors([f"p{i}" for i in range(100)], clustered(100, 512, seed=1), model="m")
    kwargs = {"query": np.ones(512), **kwargs}
    with pytest.raises(BadArgument, match=message):
        store.search(**kwargs)


@pytest.mark.parametrize(
    "ids, vectors, message",
    [
        (["a", "b"], np.ones((3, 4)), "2 photo_ids but 3 vectors"),
        (["a", "a"], np.eye(2), "photo_id 'a' occurs more than once"),
        (["a", None], np.eye(2), "nulls"),
        (["a", "b\x00"], np.eye(2), "NUL"),
        ([1, 2], np.eye(2), "must be strings"),
        (["a", "b"], np.array([[1.0, np.nan], [0, 1]]), "photo_id 'a' holds NaN or infinite"),
        (["a", "b"], np.array([[1.0, 0], [0, 0]]), "photo_id 'b' holds all zeros"),
        (["a", "b"], np.array([[1e38, 1e38], [0, 1]]), "photo_id 'a' holds values too large"),
        (["a", "b"], np.array([[1, 0], [1e-30, 0]]), "photo_id 'b' holds values too large or too small"),
        (["a", "b"], np.ones(2), r"\(n, d\) array"),
        (["a", "b"], np.array([["x", "y"], ["z", "w"]]), "must hold numbers"),
    ],
)
def test_bad_vectors(ids, vectors, message):
    with pytest.raises(BadArgument, match=message):
        InMemoryVectors(ids, vectors)


def test_bad_tables():
    good = pa.table({"photo_id": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 1.0]]})
    with pytest.raises(BadArgument, match="no column 'vec'"):
        InMemoryVectors.from_arrow(good, vector_column="vec")
    with pytest.raises(BadArgument, match="has 3 values, expected 2"):
        InMemoryVectors.from_arrow(pa.table({"photo_id": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 1.0, 2.0]]}))
    with pytest.raises(BadArgument, match="has 2 values, expected 4"):
        InMemoryVectors.from_arrow(good, dim=4)
    with pytest.raises(BadArgument, match="row 1 is null"):
        InMemoryVectors.from_arrow(pa.table({"photo_id": ["a", "b"], "embedding": [[1.0, 0.0], None]}))
    with pytest.raises(BadArgument, match="needs dim="):
        InMemoryVectors.from_arrow(good.slice(0, 0))
    with pytest.raises(BadArgument, match="list of floats"):
        InMemoryVectors.from_arrow(pa.table({"photo_id": ["a"], "embedding": [1.0]}))
    with pytest.raises(BadArgument, match="first_pass must be one of"):
        InMemoryVectors.from_arrow(good, first_pass="int4")


# -- the int8 first pass ---------------------------------------------------------------------


@needs_faiss
def test_faiss_scores_integral_int8_exactly():
    """What the first pass relies on: QT_8bit_direct_signed stores whole numbers in -127..127
    as they are, and scores a whole-number query as the exact integer dot product (faiss
    1.15 quantizes the query too, truncating fractions; whole numbers pass unchanged)."""
    import faiss

    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (1000, 512)).astype(np.float32)
    index = faiss.IndexScalarQuantizer(512, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT)
    index.add(codes)
    np.testing.assert_array_equal(index.sa_decode(index.sa_encode(codes)), codes)
    query = rng.integers(-127, 128, (1, 512)).astype(np.float32)
    scores, found = index.search(query, 1000)
    exact = codes.astype(np.int64) @ query[0].astype(np.int64)
    np.testing.assert_array_equal(scores[0], exact[found[0]].astype(np.float32))


@needs_faiss
@pytest.mark.parametrize("dim", [512, 768])
def test_fast_path_recall_on_clustered_vectors(dim):
    n = 20_000
    vectors = clustered(n, dim, seed=dim, clusters=200)
    ids = [f"p{i:06d}" for i in range(n)]
    store = InMemoryVectors(ids, vectors, first_pass="int8", threads=2)
    assert store.first_pass == "int8"
    assert store.nbytes["int8"] >= n * dim
    rng = np.random.default_rng(1)
    mask = rng.random(n) < 0.3  # a filter that keeps the int8 pass (1% would scan exactly)
    recalls, recalls_masked = [], []
    for q in queries(vectors, 30, seed=dim):
        exact = store.search(q, 10)
        fast = store.search(q, 10, exact=False)
        recalls.append(len(set(exact.photo_ids) & set(fast.photo_ids)) / 10)
        # Whatever the pass proposed, the rows it returns carry exact distances.
        np.testing.assert_allclose(fast.distances, 1 - vectors[fast.rows].astype(np.float64) @ unit(q), atol=1e-6)
        masked_exact = store.search(q, 10, allowed=mask)
        masked_fast = store.search(q, 10, allowed=mask, exact=False)
        assert all(mask[masked_fast.rows])
        recalls_masked.append(len(set(masked_exact.photo_ids) & set(masked_fast.photo_ids)) / 10)
    assert np.mean(recalls) >= 0.99
    assert np.mean(recalls_masked) >= 0.99


@needs_faiss
@pytest.mark.parametrize("dim", [64, 3])
def test_fast_path_is_exact_whenever_it_says_so(dim):
    """Small candidate pools make the int8 pass miss rows; every page it calls exact must be."""
    n = 5000
    vectors = clustered(n, dim, seed=5, clusters=30, spread=1.2)
    ids = [f"p{i:05d}" for i in range(n)]
    store = InMemoryVectors(ids, vectors, first_pass="int8", threads=2)
    some = np.flatnonzero(np.random.default_rng(dim).random(n) < 0.4)  # the int8 pass with a selector
    claimed = unproven = 0
    for candidates in (10, 100, 1000):
        for q in queries(vectors, 12, seed=candidates):
            for case in (dict(k=10), dict(k=5, offset=4), dict(k=10, max_distance=0.2), dict(k=10, allowed=some)):
                hits = store.search(q, exact=False, candidates=candidates, **case)
                expected = reference(vectors, ids, q, **case)
                if hits.exact:
                    claimed += 1
                    check(hits, expected)
                else:
                    unproven += 1
                # exact=True: the int8 page when proven, else the scan; exact either way.
                proven_or_scanned = store.search(q, candidates=candidates, **case)
                assert proven_or_scanned.exact
                check(proven_or_scanned, expected)
    # Both outcomes occur: the bound proves pages exact, and small pools leave some unproven.
    assert claimed > 0 and unproven > 0


def test_without_faiss_the_scan_answers(monkeypatch):
    from clipsql.search import memory

    monkeypatch.setattr(memory, "_import_faiss", lambda: None)
    monkeypatch.setattr(memory, "FAST_MIN_ROWS", 100)
    vectors = clustered(1000, 16, seed=2)
    ids = [f"p{i}" for i in range(1000)]
    with pytest.raises(BadArgument, match=r"first_pass='int8' needs faiss-cpu: pip install 'clipsql\[fast-search\]'"):
        InMemoryVectors(ids, vectors, first_pass="int8")
    store = InMemoryVectors(ids, vectors)  # auto, above FAST_MIN_ROWS: no faiss, no first pass
    assert store.first_pass == "none" and store.nbytes["int8"] == 0
    hits = store.search(vectors[7], 10, exact=False)
    assert hits.exact
    check(hits, reference(vectors, ids, vectors[7], 10))


@needs_faiss
def test_first_pass_choice():
    vectors = clustered(1000, 16, seed=2)
    ids = [f"p{i}" for i in range(1000)]
    assert InMemoryVectors(ids, vectors).first_pass == "none"  # below FAST_MIN_ROWS
    assert InMemoryVectors(ids, vectors, first_pass="none").first_pass == "none"
    forced = InMemoryVectors(ids, vectors, first_pass="int8", threads=3)
    assert forced.first_pass == "int8"
    q = vectors[3]
    assert forced.search(q, 5, exact=False).photo_ids == forced.search(q, 5).photo_ids


# -- the same rows as the SQL search -----------------------------------------------------------


@pytest.fixture(scope="module")
def sql_stores(tmp_path_factory):
    """chdb and DuckDB stores of tests/searchdata.py (2,000 photos, 2 deleted), closed at the end."""
    opened = {}
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"memory-{engine}")
        db = open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        searchdata.load(db, 2000)
        opened[engine] = db
    yield opened
    for db in opened.values():
        db.close()


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_same_rows_as_the_sql_search(sql_stores, engine):
    db = sql_stores[engine]
    n = 2000
    vectors = searchdata.vectors(n)
    kept = [i for i in range(n) if i not in searchdata.DELETED]
    ids = [searchdata.photo_id(i) for i in kept]
    store = InMemoryVectors(ids, vectors[kept])
    iceland = store.rows_of([searchdata.photo_id(i) for i in kept if i % 100 == 7])
    rng = np.random.default_rng(3)
    for q in [vectors[1996], vectors[37] + 0.5 * rng.standard_normal(512), rng.standard_normal(512)]:
        for case in (dict(k=10), dict(k=7, offset=5), dict(k=50, max_distance=0.95)):
            frame = search.nearest(db, q, model=searchdata.MODEL, **case)
            hits = store.search(q, **case)
            assert hits.photo_ids == frame["photo_id"].tolist()
            np.testing.assert_allclose(hits.distances, frame["distance"].to_numpy(), atol=1e-5)
        frame = search.nearest(db, q, model=searchdata.MODEL, k=10, country="Iceland")
        hits = store.search(q, 10, allowed=iceland)
        assert hits.photo_ids == frame["photo_id"].tolist()
        np.testing.assert_allclose(hits.distances, frame["distance"].to_numpy(), atol=1e-5)
