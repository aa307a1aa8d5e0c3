"""`clipsql search ...` end to end: every kind, the output formats, the HTML grid, errors as
one line; on a DuckDB store file (and chdb for one kind), the same functions as the API."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import searchdata
from clipsql import search
from clipsql.cli import main
from clipsql.cli_search import render_frame, render_photo_table
from clipsql.db import open_store
from conftest import jpeg_bytes

N = 300


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_clip):
    """Store option lists for the CLI: a DuckDB store and a chdb store with the same data,
    closed after loading (the CLI opens them itself), and three cached images."""
    out = {}
    for engine in ("duckdb", "chdb"):
        root = tmp_path_factory.mktemp(f"cli-{engine}")
        options = ["--store", str(root)] + (["--duckdb", str(root / "s.duckdb")] if engine == "duckdb" else [])
        with open_store(root, duckdb=str(root / "s.duckdb") if engine == "duckdb" else None) as db:
            searchdata.load(db, N, model_source=str(tiny_clip))
            db.image_dir.mkdir(parents=True, exist_ok=True)
            for i in (1, 2, 3):
                (db.image_dir / f"{searchdata.photo_id(i)}.jpg").write_bytes(jpeg_bytes(i, size=(120, 80)))
        out[engine] = (root, options)
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_search_formats_match_the_api(stores, capsys):
    root, opts = stores["duckdb"]
    code, out, err = run(capsys, "search", "text", "a red car", "-k", 4, "--format", "json", "--device", "cpu", *opts)
    assert code == 0, err
    records = json.loads(out)
    with open_store(root, duckdb=str(root / "s.duckdb")) as db:
        api = search.text("a red car", 4, db=db, device="cpu")
    assert [r["photo_id"] for r in records] == api["photo_id"].tolist()
    assert set(records[0]) == set(search.PHOTO_COLUMNS)
    code, out, _ = run(capsys, "search", "text", "a red car", "-k", 4, "--format", "csv", *opts)
    assert pd.read_csv(io.StringIO(out))["photo_id"].tolist() == api["photo_id"].tolist()
    code, out, _ = run(capsys, "search", "text", "a red car", "-k", 4, *opts)
    assert out.splitlines()[0].split() == ["photo_id", "distance", "description", "photo_url"]
    assert len(out.splitlines()) == 5


#: Text a photo's description and URL may hold (a hostile release, a hand-made INSERT).
HOSTILE_TEXTS = [
    None,
    "",
    "a dog",
    "x" * 59,
    "x" * 60,
    "y" * 61,
    "long " * 40,
    "tab\there",
    "two\nlines",
    "carriage\rreturn\r\n",
    'comma, "quoted" field',
    "ünïcödé 日本語 🐕" * 5,
    "  leading and trailing  ",
    "back\\slash",
    "\x00nul",
]


def _photo_tables(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    texts = [[HOSTILE_TEXTS[i] for i in row] for row in rng.integers(0, len(HOSTILE_TEXTS), (3, n))]
    distances = np.concatenate([[0.0, -1.2e-7, 1e-9, 2.0, 1.99995, 0.00005][: n // 2], rng.random(n) * 2])[:n]
    ids = [f"p{i:0{int(rng.integers(1, 6))}d}" for i in range(n)]
    return pa.table(
        {
            "photo_id": ids,
            "distance": pa.array(distances, pa.float64()),
            "description": pa.array(texts[0], pa.string()),
            "photo_url": pa.array(texts[1], pa.string()),
            "photo_image_url": pa.array(texts[2], pa.string()),
        }
    )


@pytest.mark.parametrize("seed", range(40))
def test_a_photo_table_prints_as_its_dataframe_prints(seed):
    # The CLI prints a photo search from Arrow (no pandas in a cold search): the text is the
    # one the DataFrame of the same rows renders to, whatever the values hold.
    table = _photo_tables(seed)
    columns = ["photo_id", "distance", "description", "photo_url"]
    frame = table.to_pandas()
    assert render_photo_table(table, "table", columns) == render_frame(frame, "table", table_columns=columns)
    assert render_photo_table(table, "csv", columns) == render_frame(frame, "csv", table_columns=columns)
    empty = table.slice(0, 0)
    assert render_photo_table(empty, "table", columns) == render_frame(empty.to_pandas(), "table", columns)
    assert render_photo_table(empty, "csv", columns) == render_frame(empty.to_pandas(), "csv", columns)


def test_filters_paging_and_rerank_options_reach_the_query(stores, capsys):
    root, opts = stores["duckdb"]
    argv = [
        "search",
        "similar",
        "p0010",
        "-k",
        3,
        "--offset",
        1,
        "--orientation",
        "landscape",
        "--featured",
        "--keyword",
        "k2",
        "--keyword",
        "k4",
        "--no-has-description",
        "--format",
        "json",
        *opts,
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    with open_store(root, duckdb=str(root / "s.duckdb")) as db:
        api = search.similar(
            "p0010",
            3,
            offset=1,
            orientation="landscape",
            featured=True,
            keywords_any=["k2", "k4"],
            has_description=False,
            db=db,
        )
    assert [r["photo_id"] for r in json.loads(out)] == api["photo_id"].tolist() and len(api) == 3
    code, out, err = run(
        capsys, "search", "similar", "p0010", "-k", 3, "--rerank", "mmr", "--mmr-lambda", 0.2, "--format", "json", *opts
    )
    assert code == 0 and len(json.loads(out)) == 3, err


def test_every_kind_runs_from_the_cli(stores, capsys, tmp_path):
    root, opts = stores["duckdb"]
    picture = tmp_path / "q.jpg"
    picture.write_bytes(jpeg_bytes(9, size=(100, 100)))
    for argv, rows in [
        (["search", "image", picture, "-k", 2], 2),
        (["search", "combined", "beach -people 2:sunset", "--image", picture, "--image-weight", 0.5, "-k", 2], 2),
        (["search", "crop", picture, "--box", "0.1,0.1,0.6,0.6", "-k", 2], 2),
        (["search", "crop", "--photo-id", "p0001", "--box", "0,0,60,40", "-k", 2], 2),
        (["search", "duplicates", "--max-distance", 0.9, "-k", 2, "--country", "Japan"], 2),
        (
            ["search", "facets", "a red car", "-k", 50, "--facet", "country", "--facet", "color"],
            6,
        ),  # 2 colors, 4 countries
    ]:
        code, out, err = run(capsys, *argv, "--format", "json", *opts)
        assert code == 0, (argv, err)
        assert len(json.loads(out)) == rows, argv


def test_html_grid_shows_cached_thumbnails_distance_and_escaped_description(stores, capsys, tmp_path):
    root, opts = stores["chdb"]
    page = tmp_path / "out" / "grid.html"
    code, out, err = run(capsys, "search", "similar", "p0001", "-k", 300, "--html", page, *opts)
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert html.count("<figure>") == N - 1 - len(searchdata.DELETED)
    assert html.count("data:image/jpeg;base64,") == 2  # p0002 and p0003 are cached, p0001 is the query
    assert "photo 2" in html and 'class="d">' in html
    pairs = tmp_path / "pairs.html"
    code, _, err = run(capsys, "search", "duplicates", "--max-distance", 0.9, "-k", 5, "--html", pairs, *opts)
    assert code == 0 and pairs.read_text(encoding="utf-8").count('<div class="pair">') == 5, err

    from clipsql.render import write_html_grid

    frame = pd.DataFrame(
        [
            {
                "photo_id": "<b>x</b>",
                "distance": 0.5,
                "description": "<script>alert(1)</script>",
                "photo_url": "javascript:alert(1)",
                "photo_image_url": None,
            }
        ]
    )
    text = write_html_grid(frame, tmp_path / "x.html", tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text and "javascript:" not in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "similar", "no-such-photo"], "photo_id 'no-such-photo' has no vector"),
        (["search", "text", "x", "-k", 0], "k must be an integer"),
        (["search", "text", "x", "--submitted-from", "last week"], "submitted_from must be a date"),
        (["search", "crop", "--box", "1,2,3"], "box must be"),
        (["search", "image", "/no/such/file.jpg"], "does not exist"),
        (["search", "text", "x", "--model", "'; DROP TABLE photos; --"], "has no vectors"),
    ],
)
def test_errors_are_one_line_on_stderr(stores, capsys, argv, message):
    _, opts = stores["duckdb"]
    code, out, err = run(capsys, *argv, *opts)
    assert code == 2 and out == ""
    assert err.startswith("clipsql: error: ") and message in err and err.count("\n") == 1


def test_hostile_filter_values_from_the_command_line(stores, capsys):
    root, opts = stores["chdb"]
    code, out, err = run(
        capsys, "search", "text", "x", "--country", "'; DROP TABLE photos; --", "--camera-make", "`x`", *opts
    )
    assert (code, out.strip(), err) == (
        0,
        "no photos match: country=\"'; DROP TABLE photos; --\", camera-make='`x`'; "
        "`clipsql search facets` lists the values the store has",
        "",
    )
    with open_store(root) as db:
        assert db.count("photos") == N
