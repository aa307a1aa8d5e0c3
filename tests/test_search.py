"""Search on real chdb and DuckDB stores: every query kind, every filter, paging, re-ranking,
checked against a numpy/pandas reference over the same synthetic data (tests/searchdata.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import searchdata
from clipsql import search
from clipsql.db import open_store
from clipsql.errors import BadArgument, NotFound
from clipsql.images import open_rgb
from conftest import jpeg_bytes

N = 2000


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip):
    """One loaded chdb store and one loaded DuckDB store, same data (closed at module end)."""
    opened = {}
    vectors = None
    for engine in ("chdb", "duckdb"):
        root = tmp_path_factory.mktemp(f"search-{engine}")
        db = open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None)
        vectors = searchdata.load(db, N, model_source=str(tiny_clip))
        opened[engine] = db
    yield opened, vectors
    for db in opened.values():
        db.close()


@pytest.fixture(params=["chdb", "duckdb"])
def db(request, stores):
    return stores[0][request.param]


@pytest.fixture(scope="module")
def meta():
    frame = pd.DataFrame(searchdata.photo_rows(N))
    frame["deleted"] = [i in searchdata.DELETED for i in range(N)]
    kw = pd.DataFrame(searchdata.keyword_rows(N))
    frame["keywords"] = frame["photo_id"].map(kw.groupby("photo_id")["keyword"].apply(set))
    frame["color"] = ["black" if i % 2 == 0 else "white" for i in range(N)]
    return frame


@pytest.fixture(scope="module")
def vectors(stores):
    return stores[1]


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def expected(vectors, meta, query, k, mask=None, offset=0, exclude=None, max_distance=None):
    """(ids, distances) of the reference ranking: cosine distance, ties by photo_id."""
    distance = 1 - vectors.astype(np.float64) @ np.asarray(query, np.float64)
    keep = ~meta["deleted"].to_numpy()
    if mask is not None:
        keep &= np.asarray(mask)
    if exclude is not None:
        keep &= (meta["photo_id"] != exclude).to_numpy()
    if max_distance is not None:
        keep &= distance <= max_distance
    order = sorted(np.flatnonzero(keep), key=lambda i: (distance[i], meta["photo_id"][i]))
    page = order[offset : offset + k]
    return [meta["photo_id"][i] for i in page], distance[page]


def query_vector(seed=7, near=37, noise=0.6):
    v = searchdata.vectors(N)[near] + noise * searchdata.vectors(1, seed)[0]
    return unit(v)


def check(frame, ids, distances):
    assert list(frame.columns) == search.PHOTO_COLUMNS
    assert frame["photo_id"].tolist() == ids
    np.testing.assert_allclose(frame["distance"].to_numpy(), distances, atol=2e-5)


# --- query kinds --------------------------------------------------------------------------


def test_text_search_is_exact_and_pages(db, vectors, meta, embedder):
    q = embedder.embed_texts(["a dog on a beach"])[0]
    first = search.text("a dog on a beach", 5, db=db, device="cpu")
    check(first, *expected(vectors, meta, q, 5))
    second = search.text("a dog on a beach", 5, offset=5, db=db, device="cpu")
    check(second, *expected(vectors, meta, q, 5, offset=5))
    both = search.text("a dog on a beach", 10, db=db, device="cpu")
    assert both["photo_id"].tolist() == first["photo_id"].tolist() + second["photo_id"].tolist()
    assert first.loc[0, "description"] in (None, "") or first.loc[0, "description"].startswith("photo ")


FILTER_CASES = [
    ({"country": "Iceland"}, lambda m: m["photo_location_country"] == "Iceland"),
    ({"city": "city3"}, lambda m: m["photo_location_city"] == "city3"),
    ({"photographer": "user4"}, lambda m: m["photographer_username"] == "user4"),
    (
        {"submitted_from": "2020-03-01", "submitted_to": dt.date(2020, 3, 20)},
        lambda m: m["photo_submitted_at"].map(lambda t: dt.date(2020, 3, 1) <= t.date() <= dt.date(2020, 3, 20)),
    ),
    ({"orientation": "landscape"}, lambda m: m["photo_width"] > m["photo_height"]),
    ({"orientation": "portrait"}, lambda m: m["photo_width"] < m["photo_height"]),
    ({"orientation": "square"}, lambda m: m["photo_width"] == m["photo_height"]),
    ({"min_aspect_ratio": 0.9, "max_aspect_ratio": 1.1}, lambda m: m["photo_aspect_ratio"].between(0.9, 1.1)),
    ({"min_width": 3500}, lambda m: m["photo_width"] >= 3500),
    ({"min_height": 3500}, lambda m: m["photo_height"] >= 3500),
    ({"min_views": 1_500_000}, lambda m: m["stats_views"] >= 1_500_000),
    ({"min_downloads": 19_000}, lambda m: m["stats_downloads"] >= 19_000),
    ({"featured": True}, lambda m: m["photo_featured"]),
    ({"featured": False}, lambda m: ~m["photo_featured"]),
    ({"camera_make": "NIKON CORPORATION"}, lambda m: m["exif_camera_make"] == "NIKON CORPORATION"),
    ({"camera_model": "M2"}, lambda m: m["exif_camera_model"] == "M2"),
    ({"keywords_any": ["k3", "rare"]}, lambda m: m["keywords"].map(lambda s: bool({"k3", "rare"} & s))),
    ({"keywords_all": ["k7", "j0", "k7"]}, lambda m: m["keywords"].map(lambda s: {"k7", "j0"} <= s)),
    ({"color": "white"}, lambda m: m["color"] == "white"),
    ({"has_description": True}, lambda m: m["photo_description"].fillna("") != ""),
    ({"has_description": False}, lambda m: m["photo_description"].fillna("") == ""),
    (
        {"country": "Japan", "orientation": "landscape", "color": "black", "min_views": 100_000},
        lambda m: (
            (m["photo_location_country"] == "Japan")
            & (m["photo_width"] > m["photo_height"])
            & (m["color"] == "black")
            & (m["stats_views"] >= 100_000)
        ),
    ),
    ({"country": "Atlantis"}, lambda m: m["photo_id"] == ""),
]


@pytest.mark.parametrize("filters, reference", FILTER_CASES, ids=[str(c[0]) for c in FILTER_CASES])
def test_every_filter_matches_the_reference(db, vectors, meta, filters, reference):
    q = query_vector()
    frame = search.nearest(db, q, model=searchdata.MODEL, k=8, **filters)
    check(frame, *expected(vectors, meta, q, 8, mask=reference(meta).to_numpy(bool)))


def test_a_one_percent_filter_still_returns_k_rows(db, vectors, meta):
    iceland = (meta["photo_location_country"] == "Iceland").to_numpy()
    assert iceland.sum() == N // 100
    q = query_vector(seed=3, near=1500)
    for rerank in (None, "exact", "mmr"):
        frame = search.nearest(db, q, model=searchdata.MODEL, k=10, country="Iceland", rerank=rerank)
        assert len(frame) == 10, rerank
        assert set(frame["photo_id"]) <= set(meta["photo_id"][iceland])
    check(
        search.nearest(db, q, model=searchdata.MODEL, k=10, country="Iceland"),
        *expected(vectors, meta, q, 10, mask=iceland),
    )


def test_max_distance_bounds_the_results(db, vectors, meta):
    q = query_vector(noise=0.3)
    ids, distances = expected(vectors, meta, q, 50, max_distance=0.8)
    assert 0 < len(ids) < 50
    check(search.nearest(db, q, model=searchdata.MODEL, k=50, max_distance=0.8), ids, distances)


def test_deleted_photos_are_never_returned_and_k_rows_still_come(db, vectors, meta):
    q = vectors[searchdata.DELETED[0]]
    frame = search.nearest(db, q, model=searchdata.MODEL, k=10)
    assert not set(frame["photo_id"]) & {searchdata.photo_id(i) for i in searchdata.DELETED}
    check(frame, *expected(vectors, meta, q, 10))


def test_ties_are_broken_by_photo_id(db, vectors, meta):
    # p1996 and p1997 hold the same vector: equal distances, so p1996 comes first.
    frame = search.nearest(db, vectors[1996], model=searchdata.MODEL, k=3)
    assert frame["photo_id"].tolist()[:2] == ["p1996", "p1997"]
    assert frame["distance"][0] == frame["distance"][1]
    one = search.nearest(db, vectors[1996], model=searchdata.MODEL, k=1)
    assert one["photo_id"].tolist() == ["p1996"]
    page = search.nearest(db, vectors[1996], model=searchdata.MODEL, k=1, offset=1)
    assert page["photo_id"].tolist() == ["p1997"]


def test_similar_uses_the_stored_vector_and_leaves_the_photo_out(db, vectors, meta):
    frame = search.similar("p0037", 6, db=db)
    check(frame, *expected(vectors, meta, vectors[37], 6, exclude="p0037"))
    filtered = search.similar("p0037", 4, db=db, featured=True, offset=2)
    check(filtered, *expected(vectors, meta, vectors[37], 4, mask=meta["photo_featured"], exclude="p0037", offset=2))
    mmr = search.similar("p0037", 4, db=db, rerank="mmr", mmr_lambda=1.0)
    assert mmr["photo_id"].tolist() == frame["photo_id"].tolist()[:4]
    with pytest.raises(NotFound, match="no-such-photo"):
        search.similar("no-such-photo", db=db)


def test_image_search_by_file_and_by_url(db, vectors, meta, embedder, tmp_path, image_server):
    path = tmp_path / "query.jpg"
    path.write_bytes(jpeg_bytes(3))
    q = embedder.embed_images([open_rgb(jpeg_bytes(3))])[0]
    by_file = search.image(path, 5, db=db, device="cpu")
    check(by_file, *expected(vectors, meta, q, 5))
    by_url = search.image(f"{image_server.url}/img/3.jpg", 5, db=db, device="cpu")
    assert by_url["photo_id"].tolist() == by_file["photo_id"].tolist()
    with pytest.raises(NotFound, match="does not exist"):
        search.image(tmp_path / "missing.jpg", db=db)
    (tmp_path / "bad.jpg").write_bytes(b"<html>no</html>")
    with pytest.raises(BadArgument, match="not a usable image"):
        search.image(tmp_path / "bad.jpg", db=db)
    with pytest.raises(BadArgument, match="cannot fetch image"):
        search.image(f"{image_server.url}/missing.jpg", db=db)


@pytest.mark.parametrize(
    "text, terms",
    [
        ("beach -people", [("beach", 1.0), ("people", -1.0)]),
        ("2:sunset", [("sunset", 2.0)]),
        ("a dog on a beach -people 0.5:sunset", [("a dog on a beach", 1.0), ("people", -1.0), ("sunset", 0.5)]),
        ('-"city lights" 2:"golden hour" sea', [("city lights", -1.0), ("golden hour", 2.0), ("sea", 1.0)]),
        ("-2:fog", [("fog", -2.0)]),
    ],
)
def test_combined_terms_parse(text, terms):
    assert search.parse_terms(text) == terms


@pytest.mark.parametrize("text, message", [('"open', "cannot parse"), ("0:x", "weight 0"), ("-", None), ("2:", None)])
def test_bad_combined_terms_are_rejected(text, message):
    if message is None:  # a lone '-' or '2:' is a plain word
        assert search.parse_terms(text) == [(text, 1.0)]
    else:
        with pytest.raises(BadArgument, match=message):
            search.parse_terms(text)


def test_combined_is_the_renormalized_weighted_sum(db, vectors, meta, embedder, tmp_path):
    e = dict(zip(["beach", "people", "sunset"], embedder.embed_texts(["beach", "people", "sunset"])))
    q = unit(e["beach"] - e["people"] + 2 * e["sunset"])
    check(search.combined("beach -people 2:sunset", 5, db=db, device="cpu"), *expected(vectors, meta, q, 5))
    path = tmp_path / "img.jpg"
    path.write_bytes(jpeg_bytes(4))
    picture = embedder.embed_images([open_rgb(jpeg_bytes(4))])[0]
    q2 = unit(0.5 * e["beach"] + 2.0 * 0.5 * picture)
    frame = search.combined("beach", 5, images=[(path, 2.0)], text_weight=0.5, image_weight=0.5, db=db, device="cpu")
    check(frame, *expected(vectors, meta, q2, 5))
    with pytest.raises(BadArgument, match="cancel out"):
        search.combined("beach -beach", db=db, device="cpu")
    with pytest.raises(BadArgument, match="at least one"):
        search.combined("", db=db)


def test_crop_of_a_file_and_of_an_indexed_photo(db, vectors, meta, embedder, tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(5, size=(200, 100)))
    region = open_rgb(jpeg_bytes(5, size=(200, 100))).crop((50, 25, 150, 75))
    q = embedder.embed_images([region])[0]
    by_fraction = search.crop(path, (0.25, 0.25, 0.75, 0.75), 5, db=db, device="cpu")
    by_pixels = search.crop(path, (50, 25, 150, 75), 5, db=db, device="cpu")
    check(by_fraction, *expected(vectors, meta, q, 5))
    assert by_pixels["photo_id"].tolist() == by_fraction["photo_id"].tolist()
    db.image_dir.mkdir(parents=True, exist_ok=True)
    (db.image_dir / "p0042.jpg").write_bytes(jpeg_bytes(5, size=(200, 100)))
    cached = search.crop(box=(50, 25, 150, 75), k=5, photo_id="p0042", db=db, device="cpu")
    assert cached["photo_id"].tolist() == by_fraction["photo_id"].tolist()
    with pytest.raises(NotFound, match="no cached image"):
        search.crop(box=(0, 0, 1, 1), photo_id="p0043", db=db)
    for box in [(0.5, 0.5, 0.2, 0.9), (0, 0, 300, 50), (1, 2, 3)]:
        with pytest.raises(BadArgument):
            search.crop(path, box, db=db)
    with pytest.raises(BadArgument, match="not both"):
        search.crop(path, (0, 0, 1, 1), photo_id="p0042", db=db)
    assert search.parse_box("0.1, 0.2,0.5,1") == (0.1, 0.2, 0.5, 1.0)
    with pytest.raises(BadArgument):
        search.parse_box("1,2,x,4")


def test_near_duplicates_are_the_close_pairs(db, vectors, meta):
    pairs = search.duplicates(0.01, 10, db=db)
    assert pairs.values.tolist()[0][:2] == ["p1996", "p1997"]
    assert pairs["photo_id_a"].tolist() == ["p1996", "p1998"] and pairs["photo_id_b"].tolist() == ["p1997", "p1999"]
    np.testing.assert_allclose(pairs["distance"], [0.0, 1 - float(vectors[1998] @ vectors[1999])], atol=2e-5)
    # Filtered to a small pool, all pairs under a loose threshold, against numpy.
    pool = meta.index[
        (meta["photographer_username"] == "user1") & (meta["photo_location_city"] == "city2") & ~meta["deleted"]
    ].to_numpy()
    d = 1 - vectors[pool] @ vectors[pool].T
    want = sorted(
        (d[a, b], meta["photo_id"][pool[a]], meta["photo_id"][pool[b]])
        for a in range(len(pool))
        for b in range(a + 1, len(pool))
        if d[a, b] <= 0.97
    )
    got = search.duplicates(0.97, 100, db=db, photographer="user1", city="city2")
    assert list(zip(got["photo_id_a"], got["photo_id_b"])) == [(a, b) for _, a, b in want][:100]
    assert len(got) == min(len(want), 100) > 0


def test_facets_count_the_top_n(db, vectors, meta):
    q = query_vector(seed=11)
    ids, _ = expected(vectors, meta, q, 60, mask=meta["photo_featured"])
    top = meta.set_index("photo_id").loc[ids]
    frame = search.facets(query_vec=q, n=60, per_facet=3, db=db, featured=True, by=["country", "keyword", "color"])
    assert set(frame["facet"]) == {"country", "keyword", "color"}

    def ref(values):
        counts = pd.Series(values).value_counts()
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return [(v, c) for v, c in ordered]

    got = {f: list(zip(g["value"], g["photos"])) for f, g in frame.groupby("facet")}
    assert got["country"] == ref(top["photo_location_country"])
    assert got["keyword"] == ref([k for s in top["keywords"] for k in s])
    assert got["color"] == ref(top["color"])
    similar = search.facets(photo_id="p0037", n=20, db=db, by="photographer")
    assert similar["photos"].sum() == 20
    with pytest.raises(BadArgument, match="exactly one"):
        search.facets(db=db)
    with pytest.raises(BadArgument, match="facets must be among"):
        search.facets(query_vec=q, by=["photo_id; DROP TABLE photos"], db=db)


def test_rerank_exact_rescores_index_candidates(db, vectors, meta):
    q = query_vector(seed=5, noise=0.4)
    ids, distances = expected(vectors, meta, q, 10)
    frame = search.nearest(db, q, model=searchdata.MODEL, k=10, rerank="exact", overfetch=20)
    # The index is approximate: most, not necessarily all, of the exact top-10 come back,
    # with exact distances, in exact order.
    assert len(set(frame["photo_id"]) & set(ids)) >= 8
    exact = 1 - vectors @ q
    np.testing.assert_allclose(frame["distance"], [exact[int(p[1:])] for p in frame["photo_id"]], atol=2e-5)
    assert frame["distance"].is_monotonic_increasing


def test_mmr_trades_relevance_for_diversity(db, vectors, meta):
    q = unit(vectors[1996] + vectors[1998])  # both duplicate pairs are the nearest four
    plain = search.nearest(db, q, model=searchdata.MODEL, k=4)
    assert set(plain["photo_id"]) == {"p1996", "p1997", "p1998", "p1999"}
    same = search.nearest(db, q, model=searchdata.MODEL, k=4, rerank="mmr", mmr_lambda=1.0)
    assert same["photo_id"].tolist() == plain["photo_id"].tolist()
    diverse = search.nearest(db, q, model=searchdata.MODEL, k=4, rerank="mmr", mmr_lambda=0.5)
    assert diverse["photo_id"].tolist()[0] == plain["photo_id"].tolist()[0]
    picked = set(diverse["photo_id"].tolist()[:2])
    assert len(picked & {"p1996", "p1997"}) == 1 and len(picked & {"p1998", "p1999"}) == 1


def test_mmr_order_on_a_toy_example():
    q = np.array([1.0, 0.0, 0.0], np.float32)
    c = np.array([[0.99, 0.14, 0], [0.99, 0.14, 0], [0.9, 0, 0.43]], np.float32)
    assert search.mmr_order(q, c, 3, 1.0) == [0, 1, 2]
    assert search.mmr_order(q, c, 2, 0.5) == [0, 2]


# --- arguments ----------------------------------------------------------------------------


class NoSQL:
    """A store that fails the test if any SQL reaches it."""

    description = "no-sql"

    def __getattr__(self, name):
        raise AssertionError(f"SQL ran ({name})")


@pytest.mark.parametrize(
    "vector, message",
    [
        ([float("nan")] * 512, "NaN or infinite"),
        ([1.0] * 511 + [float("inf")], "NaN or infinite"),
        ([], r"1-d array\), got shape \(0,\)"),
        ([[1.0] * 512], r"1-d array\), got shape \(1, 512\)"),
        ([0.0] * 512, "all zeros"),
        (["x"] * 512, "sequence of numbers"),
    ],
)
def test_bad_query_vectors_are_rejected_before_any_sql(vector, message):
    # Its width is checked against the model's once the model is looked up (test_widths.py).
    with pytest.raises(BadArgument, match=message):
        search.nearest(NoSQL(), vector, model="m")
    with pytest.raises(BadArgument, match=message):
        search.facets(query_vec=vector, db=NoSQL())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=0), "k must be"),
        (dict(k=10_001), "k must be"),
        (dict(k=2.5), "k must be"),
        (dict(offset=-1), "offset must be"),
        (dict(max_distance=float("nan")), "max_distance"),
        (dict(max_distance=3), "max_distance"),
        (dict(orientation="diagonal"), "orientation must be"),
        (dict(colour="red"), "unknown filter colour"),
        (dict(min_width=-1), "min_width"),
        (dict(submitted_from="yesterday"), "date"),
        (dict(submitted_from="2021-02-01", submitted_to="2021-01-01"), "after"),
        (dict(min_aspect_ratio=2, max_aspect_ratio=1), "larger"),
        (dict(featured="yes"), "featured"),
        (dict(keywords_any=[1]), "keywords_any must be a string"),
        (dict(country="a\x00b"), "NUL"),
        (dict(rerank="fast"), "rerank must be"),
        (dict(mmr_lambda=2), "mmr_lambda"),
        (dict(overfetch=0), "overfetch"),
        (dict(output="polars"), "output must be one of pandas, arrow"),
    ],
)
def test_bad_arguments_are_rejected_before_any_sql(kwargs, message):
    with pytest.raises(BadArgument, match=message):
        search.nearest(NoSQL(), [1.0] * 512, model="m", **kwargs)


def test_options_are_checked_when_made_with_the_keywords_messages():
    for kwargs, message in [
        (dict(k=0), "k must be"),
        (dict(offset=-1), "offset must be"),
        (dict(max_distance=3), "max_distance"),
        (dict(rerank="fast"), "rerank must be"),
        (dict(mmr_lambda=2), "mmr_lambda"),
        (dict(overfetch=0), "overfetch"),
    ]:
        with pytest.raises(BadArgument, match=message):
            search.SearchOptions(**kwargs)
    options = search.SearchOptions(k=np.int64(5), max_distance=1)
    assert (options.k, options.max_distance) == (5, 1.0) and type(options.k) is int
    for kwargs, message in [
        (dict(n=0), "n must be"),
        (dict(per_facet=10_001), "per_facet must be"),
        (dict(by=["nope"]), "facets must be among"),
        (dict(by=[]), "facets must be among"),
    ]:
        with pytest.raises(BadArgument, match=message):
            search.FacetOptions(**kwargs)
    assert search.FacetOptions(by="city").by == ("city",)
    assert search.FacetOptions().by == search.FACETS


def test_options_values_and_keywords_give_the_same_search_and_a_keyword_wins(db, vectors):
    q = vectors[5]
    featured = search.Filters(featured=True)
    by_keywords = search.nearest(db, q, model=searchdata.MODEL, k=3, offset=2, featured=True)
    by_values = search.nearest(
        db, q, model=searchdata.MODEL, options=search.SearchOptions(k=3, offset=2), filters=featured
    )
    mixed = search.nearest(
        db, q, model=searchdata.MODEL, options=search.SearchOptions(k=3, offset=9), offset=2, filters=featured
    )
    pd.testing.assert_frame_equal(by_values, by_keywords)
    pd.testing.assert_frame_equal(mixed, by_keywords)
    assert len(search.nearest(db, q, model=searchdata.MODEL, k=2, options=search.SearchOptions(k=7))) == 2
    assert len(search.similar("p0005", db=db, options=search.SearchOptions(k=4))) == 4


def test_wrong_values_and_unknown_keywords_are_refused_before_any_sql():
    vector = [1.0] * 512
    with pytest.raises(BadArgument, match="options must be a clipsql.search.SearchOptions, got dict"):
        search.nearest(NoSQL(), vector, model="m", options={"k": 3})
    with pytest.raises(BadArgument, match="options must be a clipsql.search.FacetOptions, got SearchOptions"):
        search.facets(query_vec=vector, options=search.SearchOptions(), db=NoSQL())
    with pytest.raises(BadArgument, match="filters must be a clipsql.search.Filters, got dict"):
        search.text("x", filters={"country": "Iceland"}, db=NoSQL())
    # A keyword a kind does not take is taken for a filter, as the wide signatures did.
    for call, name in [
        (lambda: search.nearest(NoSQL(), vector, model="m", duckdb="x.duckdb"), "duckdb"),
        (lambda: search.similar("p0001", device="cpu", db=NoSQL()), "device"),
        (lambda: search.duplicates(rerank="mmr", db=NoSQL()), "rerank"),
        (lambda: search.facets(query_vec=vector, offset=5, db=NoSQL()), "offset"),
    ]:
        with pytest.raises(BadArgument, match=f"unknown filter {name}; filters are "):
            call()


def test_unknown_model_and_empty_store_are_not_found(db, tmp_path):
    with pytest.raises(NotFound, match="model 'nope'"):
        search.nearest(db, [1.0] * 512, model="nope")
    with open_store(tmp_path / "empty", duckdb=str(tmp_path / "empty.duckdb")) as empty:
        with pytest.raises(NotFound, match="no vectors yet"):
            search.similar("p0001", db=empty)


# --- the Arrow form of a result ------------------------------------------------------------


def _arrow_and_frame(call):
    table, frame = call(output="arrow"), call(output="pandas")
    assert isinstance(table, pa.Table) and isinstance(frame, pd.DataFrame)
    return table, frame


def test_arrow_output_holds_the_rows_of_the_dataframe(db, vectors, meta):
    # The same search asked as a pyarrow Table (the CLI's form) and as a DataFrame: the same
    # columns, rows, order and float64 distances, on the store's snapshot (chdb) and its
    # tables (DuckDB), with filters, paging, a distance bound and an MMR re-ranking.
    q = query_vector()
    calls = {
        "nearest": lambda **o: search.nearest(db, q, model=searchdata.MODEL, k=7, **o),
        "filtered page": lambda **o: search.nearest(
            db, q, model=searchdata.MODEL, k=5, offset=3, featured=True, max_distance=1.2, **o
        ),
        "similar": lambda **o: search.similar("p0037", 6, db=db, **o),
        "similar, filtered": lambda **o: search.similar("p0037", 4, db=db, country="Iceland", **o),
        "mmr": lambda **o: search.nearest(db, q, model=searchdata.MODEL, k=4, rerank="mmr", mmr_lambda=0.5, **o),
        "none found": lambda **o: search.nearest(db, q, model=searchdata.MODEL, k=5, country="Atlantis", **o),
    }
    for name, call in calls.items():
        table, frame = _arrow_and_frame(call)
        assert table.column_names == list(frame.columns) == search.PHOTO_COLUMNS, name
        assert table.schema.field("distance").type == pa.float64(), name
        assert table.column("photo_id").to_pylist() == frame["photo_id"].tolist(), name
        np.testing.assert_array_equal(table.column("distance").to_numpy(), frame["distance"].to_numpy())
        for column in ("description", "photo_url", "photo_image_url"):
            as_frame = [None if v is None or v != v else v for v in frame[column].tolist()]  # NaN: missing
            assert table.column(column).to_pylist() == as_frame, (name, column)
    ids, _ = expected(vectors, meta, q, 7)
    assert search.nearest(db, q, model=searchdata.MODEL, k=7, output="arrow").column("photo_id").to_pylist() == ids
