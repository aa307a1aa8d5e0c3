"""The search query texts themselves: the shared filter block, the dialect rewrites, and the
MyScale form (golden-tested: it is never run here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipsql import dialect
from clipsql.cli import main
from clipsql.cli_search import sql_text
from clipsql.errors import BadArgument
from clipsql.queries import get_query, load_queries

GOLDEN = Path(__file__).parent / "golden"
FILTERED = ("search_photos", "similar_photos", "facets", "near_duplicates")
FILTERS = (
    "country",
    "city",
    "photographer",
    "submitted_from",
    "submitted_to",
    "orientation",
    "min_aspect_ratio",
    "max_aspect_ratio",
    "min_width",
    "min_height",
    "min_views",
    "min_downloads",
    "featured",
    "camera_make",
    "camera_model",
    "keywords_any",
    "keywords_all",
    "color",
    "has_description",
)


def filter_block(name: str) -> str:
    text = get_query(name).sql
    m = re.search(r"^\s*-- filters: begin.*?-- filters: end$", text, re.DOTALL | re.MULTILINE)
    assert m, f"{name} has no filter block"
    return "\n".join(line.strip() for line in m.group(0).splitlines())


def test_every_filtered_query_holds_the_same_filter_block_and_declares_it_alike():
    blocks = {name: filter_block(name) for name in FILTERED}
    assert len(set(blocks.values())) == 1, "the filter block differs between query files"
    for name in FILTERED:
        params = get_query(name).parameters
        assert set(FILTERS) <= set(params)
        assert {f: (params[f].type, params[f].meaning) for f in FILTERS} == {
            f: (get_query("search_photos").parameters[f].type, get_query("search_photos").parameters[f].meaning)
            for f in FILTERS
        }


def test_the_unfiltered_search_is_search_photos_without_its_filters():
    def body(name):
        return get_query(name).sql.split("\nSELECT\n", 1)[1]

    full = re.sub(r"\n      -- filters: begin.*?-- filters: end", "", body("search_photos"), flags=re.DOTALL)
    assert body("search_photos_unfiltered") == full
    lean = get_query("search_photos_unfiltered").parameters
    for name, param in lean.items():
        assert (param.type, param.meaning) == (
            get_query("search_photos").parameters[name].type,
            get_query("search_photos").parameters[name].meaning,
        )
    assert set(lean) == set(get_query("search_photos").parameters) - set(FILTERS)


def _photo_conditions(name: str) -> str:
    """The photos-column conditions of a query's filter block, whitespace-normalized."""
    text = get_query(name).sql
    m = re.search(
        r"(WHERE|AND) (\(\{country:Nullable\(String\)\} IS NULL.*?\{has_description:Nullable\(Bool\)\}\))\n",
        text,
        re.DOTALL,
    )
    assert m, f"{name} has no photo conditions"
    return " ".join(m.group(2).split())


def test_the_snapshot_queries_filter_like_search_photos():
    # The snapshot copies the photo columns, so its filters are search_photos' conditions on
    # photos word for word; keywords and color test the snapshot's precomputed columns (their
    # results are compared with search_photos' subqueries in tests/test_search_parity.py).
    assert _photo_conditions("search_photos_snapshot") == _photo_conditions("search_photos")
    snap = filter_block("search_photos_snapshot")
    assert "hasAny(keywords, {keywords_any:Array(String)})" in snap
    assert "hasAll(keywords, {keywords_all:Array(String)})" in snap
    assert "dominant_color = {color:Nullable(String)}" in snap
    for twin, base in (
        ("search_photos_snapshot", "search_photos"),
        ("search_photos_unfiltered_snapshot", "search_photos_unfiltered"),
    ):
        assert {n: (p.type, p.meaning) for n, p in get_query(twin).parameters.items()} == {
            n: (p.type, p.meaning) for n, p in get_query(base).parameters.items()
        }


def test_the_unfiltered_snapshot_query_is_the_snapshot_query_without_its_filters():
    def body(name):
        return get_query(name).sql.split("\nSELECT\n", 1)[1]

    full = re.sub(r"\n  -- filters: begin.*?-- filters: end", "", body("search_photos_snapshot"), flags=re.DOTALL)
    assert body("search_photos_unfiltered_snapshot") == full


def test_every_search_query_file_loads_and_says_what_it_does():
    queries = load_queries()
    for name in FILTERED + (
        "search_photos_unfiltered",
        "search_photos_ann",
        "photo_vectors",
        "model_lookup",
        "nearest_photos",
    ):
        assert queries[name].description, name
        assert all(p.meaning for p in queries[name].parameters.values())


def test_duckdb_rewrite_binds_parameters_and_drops_clickhouse_clauses():
    text = dialect.to_duckdb(get_query("search_photos").sql)
    assert "{" not in text.replace("{}", "")
    assert "CAST($query_vec AS FLOAT[])" in text and "CAST($country AS VARCHAR)" in text
    assert "CAST($submitted_from AS DATE)" in text and "CAST($keywords_all AS VARCHAR[])" in text
    code = re.sub(r"--[^\n]*", "", text)
    assert not re.search(r"\bFINAL\b|\bWITH TIES\b|\bSETTINGS\b", code)
    assert text.rstrip().endswith("OFFSET CAST($offset AS UINTEGER)")


def test_myscale_ddl_and_query_form_match_the_golden_files():
    assert sql_text("myscale") == (GOLDEN / "myscale_mstg.sql").read_text(encoding="utf-8")
    scann = sql_text("myscale", index_type="SCANN")
    assert scann == (GOLDEN / "myscale_mstg.sql").read_text(encoding="utf-8").replace(
        "TYPE MSTG('metric_type=Cosine')", "TYPE SCANN('metric_type=Cosine')"
    )
    assert "VECTOR INDEX embedding_vector_index embedding TYPE SCANN('metric_type=Cosine')" in scann
    assert "CONSTRAINT embedding_length CHECK length(embedding) = 512" in scann
    form = sql_text("myscale", query="search_photos")
    assert "distance(embedding, {query_vec:Array(Float32)}) AS distance" in form
    assert "cosineDistance" not in form and "vector_search_filter_strategy" not in form
    with pytest.raises(BadArgument):
        dialect.myscale_ddl("x", "HNSW")


def test_sql_command_prints_each_dialect(capsys):
    assert main(["sql", "--dialect", "myscale"]) == 0
    assert capsys.readouterr().out == (GOLDEN / "myscale_mstg.sql").read_text(encoding="utf-8")
    assert main(["sql", "--dialect", "duckdb", "--query", "similar_photos"]) == 0
    assert "CAST($photo_id AS VARCHAR)" in capsys.readouterr().out
    assert main(["sql"]) == 0
    assert "vector_similarity('hnsw', 'cosineDistance', 512)" in capsys.readouterr().out
    assert main(["sql", "--query", "no_such_query"]) == 2
    assert capsys.readouterr().err.startswith("clipsql: error: no query named 'no_such_query'")


def test_a_query_file_runs_verbatim_with_string_parameters_as_clickhouse_client_sends_them(tmp_path):
    """clickhouse-client passes every --param_x as text ('\\N' = NULL, '[]' = empty array);
    chdb's own session takes them the same way, with no clipsql code in between."""
    import json

    import searchdata
    from chdb import session

    from clipsql.db import open_store

    with open_store(tmp_path) as db:
        vectors = searchdata.load(db, 300)
        expected = (
            get_query("search_photos")
            .run(
                db,
                query_vec=vectors[7].tolist(),
                model="tiny",
                k=5,
                offset=0,
                max_distance=None,
                keywords_any=[],
                keywords_all=["j0"],
                country="Japan",
            )["photo_id"]
            .tolist()
        )
    query = get_query("search_photos")
    params = {p: "\\N" if param.nullable else "[]" for p, param in query.parameters.items()}
    params.update(
        query_vec=json.dumps(vectors[7].tolist()),
        model="tiny",
        k="5",
        offset="0",
        country="Japan",
        keywords_all="['j0']",
    )
    chdb_session = session.Session(str(tmp_path / "chdb"))
    try:
        out = str(chdb_session.query(query.sql, "CSV", params=params))
    finally:
        chdb_session.close()
    assert [line.split(",")[0].strip('"') for line in out.strip().splitlines()] == expected
    assert len(expected) == 5
