"""The search query texts themselves: the filters written only in their registry, the short
filtered query files, the dialect rewrites, and the MyScale form (golden-tested: it is never
run here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipsql import dialect
from clipsql.cli import main
from clipsql.cli_search import sql_text
from clipsql.errors import BadArgument
from clipsql.queries import get_query, load_queries
from clipsql.search.filters import FILTERS, Filters
from clipsql.sqlfiles import PARAMETER_RE

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
#: The query files that take the filters (a '-- @filters' line), and the parameters of each.
FILTERED = {
    "search_photos": {"query_vec", "model", "k", "offset", "max_distance"},
    "snapshot_photo_ids": {"model"},
    "similar_photos": {"photo_id", "model", "k", "offset", "max_distance"},
    "facets": {"query_vec", "model", "n", "per_facet", "max_distance"},
    "near_duplicates": {"model", "max_distance", "k", "offset"},
}
REGISTRY = ROOT / "src" / "clipsql" / "search" / "filters.py"


def _sql_and_source_files() -> list[Path]:
    files = [p for folder in ("queries", "sql") for p in (ROOT / folder).rglob("*") if p.is_file()]
    return files + [p for p in (ROOT / "src").rglob("*.py") if p != REGISTRY]


def test_filters_are_written_only_in_their_registry():
    """No file of queries/, sql/ or src/ but the registry holds a filter's condition or uses a
    filter's parameter: adding a filter is one entry of clipsql.search.filters.FILTERS."""
    conditions = {spec.condition: name for name, spec in FILTERS.items()}
    for path in _sql_and_source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for condition, name in conditions.items():
            assert condition not in text, f"{path.relative_to(ROOT)} writes the condition of filter {name}"
        used = {m.group(1) for m in PARAMETER_RE.finditer(text)} & set(FILTERS)
        assert not used, f"{path.relative_to(ROOT)} uses the filter parameters {sorted(used)}"
        assert "filters: begin" not in text, f"{path.relative_to(ROOT)} holds a copy of a filter block"
    registry = REGISTRY.read_text(encoding="utf-8")
    for condition in conditions:
        assert registry.count(condition) == 1, f"{condition!r} is written more than once in the registry"


def test_the_filtered_query_files_are_short_and_declare_only_their_own_parameters():
    queries = load_queries()
    assert {name for name, q in queries.items() if q.takes_filters} == set(FILTERED)
    for name, parameters in FILTERED.items():
        query = queries[name]
        assert set(query.parameters) == parameters, name
        assert sum(bool(re.match(r"\s*-- @filters", line)) for line in query.sql.splitlines()) == 1, name
        assert len(query.sql.splitlines()) < 60, f"{name} is {len(query.sql.splitlines())} lines long"


def test_with_filters_puts_one_condition_line_per_filter_set_and_declares_its_parameter():
    query = get_query("search_photos")
    filters = Filters.of(country="Iceland", keywords_all=["beach"], featured=False)
    filtered = query.with_filters(filters.conditions())
    body = filtered.executable_sql
    assert "AND country = {country:String}" in body
    assert "AND hasAll(keywords, {keywords_all:Array(String)})" in body
    assert "AND featured = {featured:Bool}" in body
    assert body.index("country =") < body.index("featured =") < body.index("hasAll")  # registry order
    assert not filtered.takes_filters and not re.search(r"^\s*-- @filters", filtered.sql, re.M)
    assert set(filtered.parameters) == FILTERED["search_photos"] | {"country", "keywords_all", "featured"}
    assert filtered.parameters["country"].type == "String" and not filtered.parameters["country"].nullable
    assert query.with_filters(filters.conditions()) is filtered  # made once per combination
    assert query.with_filters(()) is query and query.executable_sql.count("AND") == 1  # max_distance only


def test_every_search_query_file_loads_and_says_what_it_does():
    queries = load_queries()
    for name in [*FILTERED, "search_photos_ann", "photo_vectors", "model_lookup", "nearest_photos"]:
        assert queries[name].description, name
        assert all(p.meaning for p in queries[name].parameters.values())


def test_duckdb_rewrite_binds_parameters_and_drops_clickhouse_clauses():
    filters = Filters.of(country="Iceland", submitted_from="2020-01-01", keywords_all=["a"])
    text = dialect.to_duckdb(get_query("search_photos").with_filters(filters.conditions()).sql)
    assert "{" not in text.replace("{}", "")
    assert "CAST($query_vec AS FLOAT[])" in text and "country = CAST($country AS VARCHAR)" in text
    assert "CAST($submitted_from AS DATE)" in text and "CAST($keywords_all AS VARCHAR[])" in text
    code = re.sub(r"--[^\n]*", "", dialect.to_duckdb(get_query("similar_photos").sql))
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
    # The vector index and its CHECK sit on the per-width table, shown for 512, not on the table of record.
    assert "CREATE TABLE IF NOT EXISTS photo_embeddings_ann_512" in scann
    assert scann.count("VECTOR INDEX embedding_vector_index") == 1
    form = sql_text("myscale", query="search_photos_ann")
    assert "distance(embedding, {query_vec:Array(Float32)}) AS distance" in form
    code = "\n".join(line for line in form.splitlines() if not line.startswith("--"))
    assert "cosineDistance" not in code and "vector_search_" not in code
    with pytest.raises(BadArgument):
        dialect.myscale_ddl("x", "HNSW")


def test_sql_command_prints_each_dialect(capsys):
    assert main(["sql", "--dialect", "myscale"]) == 0
    assert capsys.readouterr().out == (GOLDEN / "myscale_mstg.sql").read_text(encoding="utf-8")
    assert main(["sql", "--dialect", "duckdb", "--query", "similar_photos"]) == 0
    assert "CAST($photo_id AS VARCHAR)" in capsys.readouterr().out
    assert main(["sql", "--ddl"]) == 0  # `clipsql sql` alone opens the console (tests/test_console.py)
    assert "vector_similarity('hnsw', 'cosineDistance', 512)" in capsys.readouterr().out
    assert main(["sql", "--query", "no_such_query"]) == 2
    assert capsys.readouterr().err.startswith("clipsql: error: no query named 'no_such_query'")


def test_a_filtered_query_runs_verbatim_with_string_parameters_as_clickhouse_client_sends_them(tmp_path):
    """clickhouse-client passes every --param_x as text ('\\N' = NULL, '[]' = empty array);
    chdb's own session takes them the same way, with no clipsql code in between: the text
    `clipsql sql --query search_photos --country Japan --all-keywords j0` prints gives the API's rows."""
    import json

    import searchdata
    from chdb import session

    from clipsql import search
    from clipsql.db import open_store

    with open_store(tmp_path) as db:
        vectors = searchdata.load(db, 300)
        expected = search.nearest(db, vectors[7], model="tiny", k=5, country="Japan", keywords_all=["j0"])
        expected = expected["photo_id"].tolist()
    text = sql_text("clickhouse", "search_photos", filters=Filters.of(country="Japan", keywords_all=["j0"]))
    params = dict(
        query_vec=json.dumps(vectors[7].tolist()),
        model="tiny",
        k="5",
        offset="0",
        max_distance="\\N",
        country="Japan",
        keywords_all="['j0']",
    )
    chdb_session = session.Session(str(tmp_path / "chdb"))
    try:
        out = str(chdb_session.query(text, "CSV", params=params))
    finally:
        chdb_session.close()
    assert [line.split(",")[0].strip('"') for line in out.strip().splitlines()] == expected
    assert len(expected) == 5


def test_filter_options_of_the_sql_command_print_the_query_with_their_conditions(capsys):
    assert main(["sql", "--query", "near_duplicates", "--country", "Iceland", "--no-featured"]) == 0
    out = capsys.readouterr().out
    assert "      AND country = {country:String}\n      AND featured = {featured:Bool}\n" in out
    assert re.search(r"^--   country +String +photos taken in this country", out, re.M)
    assert main(["sql", "--country", "Iceland"]) == 2
    assert "filter options go with --query NAME" in capsys.readouterr().err
    assert main(["sql", "--query", "models", "--country", "Iceland"]) == 2
    assert "takes no filters" in capsys.readouterr().err
