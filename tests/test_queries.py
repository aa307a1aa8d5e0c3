import pytest

from clipsql.errors import BadArgument, QueryFileError
from clipsql.queries import load_queries, parse_query_file

GOOD = """-- name: {name}
-- Photos from a country.
-- Parameters:
--   country  Nullable(String)  only photos from this country
--   k        UInt32            how many
SELECT photo_id FROM photos
WHERE {{country:Nullable(String)}} IS NULL OR photo_location_country = {{country:Nullable(String)}}
LIMIT {{k:UInt32}}
"""


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.sql"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_query_file_loads():
    queries = load_queries()
    assert {"nearest_photos", "embedded_photo_ids", "download_history", "models"} <= set(queries)
    nearest = queries["nearest_photos"]
    assert nearest.parameters["query_vec"].type == "Array(Float32)"
    assert "cosine distance" in nearest.description


def test_a_good_file_parses_and_binds(tmp_path):
    query = parse_query_file(write(tmp_path, "by_country", GOOD.format(name="by_country")))
    assert query.bind({"k": 3}) == {"country": None, "k": 3}
    with pytest.raises(BadArgument, match="needs a value for k"):
        query.bind({})
    with pytest.raises(BadArgument, match="no parameter city"):
        query.bind({"k": 1, "city": "Lima"})


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("SELECT 1\n", 1, "must start with a header line"),
        ("-- name: other\n-- x\nSELECT 1\n", 1, "differs from the file name"),
        ("-- name: q\nSELECT 1\n", 2, "needs a description"),
        (
            "-- name: q\n-- Does a thing.\n-- Parameters:\n--   k  UInt32  how many\nSELECT {k:UInt32}, {j:UInt32}\n",
            5,
            "j is used but not declared",
        ),
        (
            "-- name: q\n-- Does a thing.\n-- Parameters:\n--   k  UInt32  how many\n--   j  UInt32  unused\nSELECT {k:UInt32}\n",
            5,
            "j is declared but not used",
        ),
        (
            "-- name: q\n-- Does a thing.\n-- Parameters:\n--   k  UInt32  how many\nSELECT {k:UInt64}\n",
            5,
            "used as UInt64 but declared UInt32",
        ),
        ("-- name: q\n-- Does a thing.\n", 2, "no SQL"),
        (
            "-- name: q\n-- Does a thing.\n-- Runs after: sql/clickhouse/session/nope.sql\nSELECT 1\n",
            3,
            "names sql/clickhouse/session/nope.sql, which does not exist",
        ),
        (
            "-- name: q\n-- Does a thing.\n-- Runs after: sql/clickhouse/session/build_search_snapshot.sql\n-- Parameters:\n"
            "--   model  UInt32  wrong type\nSELECT {model:UInt32}\n",
            3,
            "uses parameter model String",
        ),
    ],
)
def test_malformed_files_are_rejected_with_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, "q", text)
    with pytest.raises(QueryFileError, match=message) as info:
        parse_query_file(path)
    assert f"{path}:{line}:" in str(info.value)


@pytest.mark.parametrize("backend", ["chdb", "duckdb"])
def test_a_query_that_fails_while_running_leaves_the_store_usable(tmp_path, backend):
    # A notebook user's typo must not break the next query (chdb used to hand the failed
    # query's error to the next one).
    from clipsql.db import open_store

    failing = {
        "chdb": "SELECT throwIf(number = 5, 'boom') AS x FROM numbers(10)",
        "duckdb": "SELECT error('boom') AS x FROM range(10)",
    }[backend]
    with open_store(tmp_path, duckdb=tmp_path / "s.duckdb" if backend == "duckdb" else None) as db:
        with pytest.raises(Exception, match="boom"):
            db.query_df(failing)
        assert db.query_df("SELECT 2 AS a")["a"].tolist() == [2]
        assert db.query_df("SELECT 3 AS a")["a"].tolist() == [3]


def _add_model(db, label: str, version: int) -> None:
    import numpy as np
    import pyarrow as pa

    from clipsql.load import embeddings_table

    vectors = np.eye(2, 512, dtype=np.float32)
    db.upsert("photo_embeddings", embeddings_table(["p1", "p2"], vectors, label, version))
    db.upsert(
        "models",
        pa.table(
            {
                "model": [label],
                "model_source": [f"/models/{label}"],
                "dim": pa.array([512], pa.uint16()),
                "version": pa.array([version], pa.uint64()),
            }
        ),
    )


@pytest.mark.parametrize("backend", ["chdb", "duckdb"])
def test_the_default_model_follows_a_write_made_through_another_store_of_the_process(tmp_path, backend):
    # search remembers model lookups for a few seconds; a notebook that keeps a store open and
    # runs a refresh (its own store object) must still see the new model at once.
    from clipsql import search
    from clipsql.db import open_store

    kwargs = {"duckdb": tmp_path / "s.duckdb"} if backend == "duckdb" else {}
    with open_store(tmp_path, **kwargs) as notebook:
        _add_model(notebook, "clip-a", 1)
        assert search.resolve_model(notebook)[0] == "clip-a"
        with open_store(tmp_path, **kwargs) as refresh_store:  # the refresh's own store object
            _add_model(refresh_store, "clip-b", 2)
        assert search.resolve_model(notebook)[0] == "clip-b"
        assert search.resolve_model(notebook, "clip-a")[1] == "/models/clip-a"
