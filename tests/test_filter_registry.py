"""The filter registry (clipsql.search.filters.FILTERS) is the one place a filter is written:
its entries obey their rules, their columns are the search relation's on every engine, the
reference and console text made from them is in the docs and runs, and a filter added to the
registry alone reaches the CLI, the Python API (over the tables and the search snapshot) and
the console text."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import searchdata
from clipsql import search
from clipsql.cli import main
from clipsql.db import open_store
from clipsql.errors import BadArgument, QueryFileError
from clipsql.queries import get_query, load_queries, parse_query_file
from clipsql.search.filters import (
    CONSOLE_EXAMPLE,
    FILTERS,
    PHOTO_SEARCH_COLUMNS,
    Filter,
    Filters,
    console_filters,
    filters_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
N = 300
#: The filter the tests add: views at most (photo i has 1000 * i views in tests/searchdata.py).
NEW = Filter("max_views", "views <= {max_views:UInt64}", "photos viewed at most this many times", metavar="N")


def views_at_most(limit: int) -> set[str]:
    """The searchable photo_ids of the test store with at most `limit` views."""
    return {searchdata.photo_id(i) for i in range(N) if 1000 * i <= limit and i not in searchdata.DELETED}


@pytest.fixture(scope="module", params=["chdb", "duckdb"])
def store(request, tmp_path_factory):
    """(root, extra CLI options) of a loaded store, closed (the CLI opens it itself)."""
    root = tmp_path_factory.mktemp(f"registry-{request.param}")
    duck = str(root / "s.duckdb") if request.param == "duckdb" else None
    with open_store(root, duckdb=duck) as db:
        searchdata.load(db, N)
    return root, duck


@pytest.fixture
def new_filter(monkeypatch):
    """The registry with NEW added, as a developer adds a filter: one entry, nothing else."""
    monkeypatch.setitem(FILTERS, NEW.name, NEW)
    return NEW


# --- the entries --------------------------------------------------------------------------


def test_every_entry_obeys_the_rules():
    options = [spec.option for spec in FILTERS.values()]
    assert len(set(options)) == len(options)
    filtered = [q for q in load_queries().values() if q.takes_filters]
    for name, spec in FILTERS.items():
        assert spec.name == name and spec.help and spec.option.startswith("--")
        assert spec.parameter.type == spec.type and not spec.parameter.nullable
        if spec.not_after is not None:  # a lower bound names its upper bound, of the same kind
            assert FILTERS[spec.not_after].kind == spec.kind
        for query in filtered:  # a filter's parameter never shadows a parameter of a query
            assert name not in query.parameters, (name, query.name)


@pytest.mark.parametrize(
    "condition, message",
    [
        ("country = 'Iceland' AND {x:String} != ''", "quote"),
        ("country = {country:String}", "no other"),
        ("country = {x:String} OR city = {y:String}", "no other"),
        ("secret_column = {x:String}", "not a column of photo_search"),
        ("lower(country) = {x:String}", "function lower"),
        ("country = {x:UUID}", "type must be one of"),
        ("country = {x:String}; DROP TABLE photos", "quote, ';'"),
        ("views > {x:UInt64} * 1.5", "literal"),
    ],
)
def test_a_bad_entry_is_refused_when_it_is_made(condition, message):
    with pytest.raises(QueryFileError, match=re.escape(message)):
        Filter("x", condition, "help")
    with pytest.raises(QueryFileError, match="choices are for String"):
        Filter("x", "views >= {x:UInt64}", "help", choices=("a",))


def test_the_columns_are_the_search_relations_and_the_snapshots_on_every_engine(store):
    root, duck = store
    with open_store(root, duckdb=duck) as db:
        relation = list(db.query_clickhouse("SELECT * FROM photo_search LIMIT 1").columns)
        assert set(PHOTO_SEARCH_COLUMNS) <= set(relation)
        with db.session():  # the snapshot is a temporary table of the session
            db.run_script("build_search_snapshot", {"model": searchdata.MODEL}, folder="session")
            snapshot = list(db.query_clickhouse("SELECT * FROM search_snapshot LIMIT 1").columns)
        assert snapshot == [c for c in relation if c != "embedding"]  # the vectors are copied into the process


# --- the Python value ---------------------------------------------------------------------


def test_filters_is_a_value_made_from_the_registry():
    f = Filters.of(country="Iceland", keywords_any="beach", min_width=np.int64(10))
    assert (f.country, f.keywords_any, f.min_width, f.city, f.keywords_all) == ("Iceland", ("beach",), 10, None, ())
    assert type(f.min_width) is int and f.active and not Filters().active
    assert f == Filters.of(min_width=10, keywords_any=["beach"], country="Iceland") and hash(f) == hash(
        Filters.of(min_width=10, keywords_any=["beach"], country="Iceland")
    )
    assert repr(f) == "Filters(country='Iceland', min_width=10, keywords_any=('beach',))"  # registry order
    assert Filters.of(f, country=None, keywords_any=[]) == Filters.of(min_width=10)
    assert f.params() == {"country": "Iceland", "min_width": 10, "keywords_any": ["beach"]}
    assert [c for c, _ in f.conditions()] == [FILTERS[n].condition for n in ("country", "min_width", "keywords_any")]
    with pytest.raises(AttributeError, match="immutable"):
        f.country = "Peru"
    with pytest.raises(BadArgument, match="unknown filter colour; filters are camera_make, camera_model, city"):
        Filters(colour="red")
    with pytest.raises(BadArgument, match="min_width must be an integer from 0 to 4294967295"):
        Filters.of(min_width=2**32)


# --- a new entry reaches everything -------------------------------------------------------


def test_a_new_entry_reaches_the_api_over_the_tables_and_the_snapshot(store, new_filter):
    root, duck = store
    with open_store(root, duckdb=duck) as db:
        q = searchdata.vectors(N)[3]
        fast = search.nearest(db, q, model=searchdata.MODEL, k=N, max_views=40_000)
        assert set(fast["photo_id"]) == views_at_most(40_000) and len(fast) == 39
        saved, db.search_snapshot_max_bytes = db.search_snapshot_max_bytes, 0
        try:  # the same over photo_search itself (on chdb the above read the snapshot)
            tables = search.nearest(db, q, model=searchdata.MODEL, k=N, filters=Filters.of(max_views=40_000))
        finally:
            db.search_snapshot_max_bytes = saved
        assert tables["photo_id"].tolist() == fast["photo_id"].tolist()
        similar = search.similar("p0003", N, db=db, filters=search.Filters(max_views=9_000), country="Japan")
        assert set(similar["photo_id"]) == {p for p in views_at_most(9_000) if int(p[1:]) % 3 == 0} - {"p0003"}
        pairs = search.duplicates(2.0, 1000, db=db, max_views=4_000)
        assert set(pairs["photo_id_a"]) | set(pairs["photo_id_b"]) == views_at_most(4_000)
        counted = search.facets(query_vec=q, db=db, n=N, by="photographer", max_views=9_000)
        assert counted["photos"].sum() == len(views_at_most(9_000))
        with pytest.raises(BadArgument, match="max_views must be an integer"):
            search.nearest(db, q, model=searchdata.MODEL, max_views=-1)


def test_a_new_entry_reaches_the_cli(store, new_filter, capsys):
    root, duck = store
    options = ["--store", str(root)] + (["--duckdb", duck] if duck else [])
    code = main(["search", "similar", "p0010", "-k", "100", "--max-views", "20000", "--format", "json", *options])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and {r["photo_id"] for r in rows} == views_at_most(20_000) - {"p0010"}
    code = main(["search", "similar", "p0010", "--max-views", "0", "--country", "Peru", *options])
    assert (code, capsys.readouterr().out) == (
        0,
        "no photos match: country='Peru', max-views=0; `clipsql search facets` lists the values the store has\n",
    )
    with pytest.raises(SystemExit):
        main(["search", "text", "--help"])
    assert re.search(r"--max-views N\s+photos viewed at most this many times", capsys.readouterr().out)


def test_a_new_entry_reaches_the_console_text(new_filter, capsys):
    assert "#   --max-views N" in console_filters() and "views <= {max_views:UInt64}" in console_filters()
    assert "| `max_views` | `--max-views N` | `views <= {max_views:UInt64}` |" in filters_markdown()
    assert main(["sql", "--console"]) == 0
    assert "views <= {max_views:UInt64}" in capsys.readouterr().out
    assert main(["sql", "--query", "search_photos", "--max-views", "5"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^ +AND views <= \{max_views:UInt64\}$", printed, re.M)
    assert re.search(r"^--   max_views +UInt64 +photos viewed at most this many times$", printed, re.M)


# --- the generated text -------------------------------------------------------------------


def test_the_docs_hold_the_generated_filter_text():
    how = "regenerate it with clipsql.search.filters.{}() (`clipsql sql --console` prints the console text)"
    assert filters_markdown() in (ROOT / "docs" / "search.md").read_text(encoding="utf-8"), how.format(
        "filters_markdown"
    )
    assert console_filters() in (ROOT / "docs" / "console.md").read_text(encoding="utf-8"), how.format(
        "console_filters"
    )


def test_the_console_example_runs_on_chdb_as_clickhouse_client_sends_it(tmp_path):
    """The example command of console_filters, its shell variables given, its sed applied as
    the shell would, run by chdb's own session with text parameters: the API's rows."""
    from chdb import session

    with open_store(tmp_path) as db:
        searchdata.load(db, N)
        name, example = CONSOLE_EXAMPLE
        expected = search.similar("p0100", 10, db=db, **example)["photo_id"].tolist()
    command = console_filters().split("\n\n", 1)[1].split("\n", 1)[1]
    for variable, value in (("$PHOTO_ID", "p0100"), ("$MODEL", searchdata.MODEL)):
        command = command.replace(variable, value)
    words = shlex.split(command.replace("\\\n", " ").replace('"$(sed', "").replace(')"', ""))
    params = dict(w[len("--param_") :].split("=", 1) for w in words if w.startswith("--param_"))
    script, file = words[words.index("--query") + 1 :]
    pattern, replacement = re.fullmatch(r"s/(.*)/(.*)/", script).groups()  # type: ignore[union-attr]
    text = re.sub(pattern, replacement, (ROOT / file).read_text(encoding="utf-8"), flags=re.M)  # sed's work
    assert file == f"queries/{name}.sql" and text.count("AND country = {country:String}") == 1
    chdb_session = session.Session(str(tmp_path / "chdb"))
    try:
        out = str(chdb_session.query(text, "CSV", params=params))
    finally:
        chdb_session.close()
    # p0007, p0107 and p0207 are the store's landscape photos from Iceland.
    assert [line.split(",")[0].strip('"') for line in out.strip().splitlines()] == expected and len(expected) == 3


# --- the '-- @filters' line ---------------------------------------------------------------


def test_a_query_file_has_at_most_one_filters_line_and_filters_need_one(tmp_path):
    path = tmp_path / "twice.sql"
    path.write_text(
        "-- name: twice\n-- Two markers.\n-- Parameters:\n--   model  String  label\n"
        "SELECT photo_id FROM photo_search\nWHERE model = {model:String}\n  -- @filters\n  -- @filters\n",
        encoding="utf-8",
    )
    with pytest.raises(QueryFileError, match=r"twice\.sql:8: a second '-- @filters' line \(the first is line 7\)"):
        parse_query_file(path)
    with pytest.raises(QueryFileError, match="takes no filters"):
        get_query("models").with_filters(Filters.of(country="x").conditions())
