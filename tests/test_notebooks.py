"""Every notebook of notebooks/ runs top to bottom on a small real store (a refresh of
generated photos with the tiny CLIP, on chdb and on DuckDB), in a kernel of this
interpreter, with the settings passed as environment variables; the outputs a user looks
at are there.

Two stores per engine: "full" (countries, cameras, years, keywords, colors, descriptions)
and "bare" (release rows with only photo_id, photo_url and photo_image_url, like an image
folder or the shared Unsplash sample): on the bare one every filter, facet, count and
color that has nothing to show says so in words, and why."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from clipsql import refresh, render, search
from clipsql.db import open_store
from clipsql.download import DownloadOptions
from clipsql.errors import BadArgument
from conftest import ImageServer, write_photos_tsv
from etl_support import subprocess_env

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
N = 24
COUNTRIES = ["Iceland", "Japan", "Peru", "Kenya"]
CAMERAS = [("Canon", "EOS R5"), ("NIKON CORPORATION", "D850"), (None, None)]
#: A description with markup: the grids must show it as text.
TRICKY = '<b>bold</b> & "quoted" <script>alert(1)</script>'
FAST = DownloadOptions(workers=4, retries=0, backoff_s=0.01, read_timeout_s=5.0)


def photo_id(i: int) -> str:
    return f"nb{i:04d}"


def write_release(folder: Path, base_url: str) -> Path:
    """N photos with countries, cameras, years, keywords and colors; nb0023 shows the same
    image as nb0022 (a planted duplicate); two more photos fail to download."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N):
        make, model = CAMERAS[i % 3]
        rows.append(
            {
                "photo_id": photo_id(i),
                "photo_url": f"https://unsplash.com/photos/{photo_id(i)}",
                "photo_image_url": f"{base_url}/img/{22 if i == 23 else i}.jpg",
                "photo_submitted_at": f"{2019 + i % 5}-0{1 + i % 9}-1{i % 10} 10:00:00",
                "photo_featured": "t" if i % 3 == 0 else "f",
                "photo_width": 4000,
                "photo_height": 3000,
                "photo_aspect_ratio": "1.33",
                "photo_description": TRICKY if i % 2 else f"test photo {i}",
                "photographer_username": f"user{i % 5}",
                "exif_camera_make": make or "",
                "exif_camera_model": model or "",
                "photo_location_country": COUNTRIES[i % 4] if i % 6 else "",
                "stats_views": 100 * i,
                "stats_downloads": i,
            }
        )
    rows.append({"photo_id": "gone", "photo_image_url": f"{base_url}/missing.jpg"})
    rows.append({"photo_id": "broken", "photo_image_url": f"{base_url}/truncated.jpg"})
    write_photos_tsv(folder / "photos.tsv000", rows)
    keywords = ["photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\tsuggested_by_user"]
    keywords += [f"{photo_id(i)}\t{kw}\t50.5\t\tf" for i in range(N) for kw in ("sky", f"tag{i % 3}")]
    (folder / "keywords.tsv000").write_text("\n".join(keywords) + "\n", encoding="utf-8")
    colors = ["photo_id\thex\tred\tgreen\tblue\tkeyword\tcoverage\tscore"]
    for i in range(N):
        dominant = ["teal", "orange", "black"][i % 3]
        colors += [
            f"{photo_id(i)}\t#101010\t16\t16\t16\t{dominant}\t0.6\t0.5",
            f"{photo_id(i)}\t#f0f0f0\t240\t240\t240\twhite\t0.2\t0.1",
        ]
    (folder / "colors.tsv000").write_text("\n".join(colors) + "\n", encoding="utf-8")
    return folder


def write_bare_release(folder: Path, base_url: str) -> Path:
    """The same N photos (nb0023 a duplicate of nb0022, two failures) with no metadata at all:
    rows of photo_id, photo_url and photo_image_url only, and no keywords or colors file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "photo_id": photo_id(i),
            "photo_url": f"https://unsplash.com/photos/{photo_id(i)}",
            "photo_image_url": f"{base_url}/img/{22 if i == 23 else i}.jpg",
        }
        for i in range(N)
    ]
    rows.append(
        {
            "photo_id": "gone",
            "photo_url": "https://unsplash.com/photos/gone",
            "photo_image_url": f"{base_url}/missing.jpg",
        }
    )
    rows.append(
        {
            "photo_id": "broken",
            "photo_url": "https://unsplash.com/photos/broken",
            "photo_image_url": f"{base_url}/truncated.jpg",
        }
    )
    write_photos_tsv(folder / "photos.tsv000", rows)
    return folder


ENGINES = ("chdb", "duckdb")
FULL = [f"{engine}-full" for engine in ENGINES]
BARE = [f"{engine}-bare" for engine in ENGINES]


@pytest.fixture(scope="module", params=FULL + BARE)
def store(request, tmp_path_factory, tiny_clip) -> dict:
    """A store filled by a real refresh (N photos embedded and cached, 2 failures), "<engine>-<kind>":
    {backend: {store, duckdb}, kind: "full" | "bare"}. Built once per module run: every test
    that takes it (or `executed`) reuses it, grouped by store."""
    engine, kind = request.param.split("-")
    root = tmp_path_factory.mktemp(f"nb-store-{request.param}")
    backend = dict(store=root, duckdb=str(root / "clipsql.duckdb") if engine == "duckdb" else None)
    server = ImageServer()
    try:
        folder = tmp_path_factory.mktemp(f"nb-release-{kind}")
        release = (write_release if kind == "full" else write_bare_release)(folder, server.url)
        summary = refresh(release, model=str(tiny_clip), download=FAST, progress=False, device="cpu", **backend)
    finally:
        server.stop()
    assert summary.stage("embed").ok == N and summary.stage("download").failed == 2
    return {"backend": backend, "kind": kind}


@pytest.fixture(scope="module")
def executed(store, tmp_path_factory) -> dict[str, nbformat.NotebookNode | str]:
    """Each notebook executed on the store: the notebook with its outputs, or the error text.

    A last cell, added here only, reports the kernel's interpreter."""
    env = subprocess_env()
    backend = store["backend"]
    env.update(CLIPSQL_STORE=str(backend["store"]), CLIPSQL_DEVICE="cpu", PYDEVD_DISABLE_FILE_VALIDATION="1")
    for name in ("CLIPSQL_DUCKDB", "CLICKHOUSE_URL", "CLIPSQL_QUERY_IMAGE", "CLIPSQL_COLOR_BY", "CLIPSQL_K"):
        env.pop(name, None)
    if backend["duckdb"]:
        env["CLIPSQL_DUCKDB"] = backend["duckdb"]
    work = tmp_path_factory.mktemp("nb-work")
    results: dict[str, nbformat.NotebookNode | str] = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
        client = NotebookClient(
            nb, kernel_name="python3", timeout=180, startup_timeout=120, resources={"metadata": {"path": str(work)}}
        )
        try:
            client.execute(env=env)
            results[path.stem] = nb
        except CellExecutionError as exc:
            results[path.stem] = f"{path.name}: {exc}"
    return results


def cell(nb, cell_id: str):
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise AssertionError(f"no cell {cell_id!r}")


def html_of(nb, cell_id: str) -> str:
    return "\n".join(
        o["data"]["text/html"]
        for o in cell(nb, cell_id).outputs
        if o.get("output_type") in ("execute_result", "display_data") and "text/html" in o.get("data", {})
    )


def text_of(nb, cell_id: str) -> str:
    out = []
    for o in cell(nb, cell_id).outputs:
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
            out.append(o["data"].get("text/html", ""))
    return "\n".join(out)


def grid_ids(page: str) -> list[str]:
    """The photo_ids of an image grid, in order."""
    return [html.unescape(m) for m in re.findall(r'<span class="id">([^<]*)</span>', page)]


def test_every_notebook_is_saved_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_explore.ipynb",
        "02_search.ipynb",
        "03_embedding_map.ipynb",
        "04_quality.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{path.name} cell {c.get('id')} has outputs"


@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_in_this_interpreter(executed, name):
    nb = executed[name]
    assert not isinstance(nb, str), nb
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
    shown = "".join(text_of(nb, c.get("id")) for c in nb.cells if c.cell_type == "code")
    # Nothing to show is said in words, never as a bare "(no results)".
    assert "Traceback" not in shown and "(no results)" not in shown and "(no pairs)" not in shown


@pytest.mark.parametrize("store", FULL, indirect=True)
def test_explore_counts_photos_by_country_year_camera_keyword_color_and_failures(executed):
    nb = executed["01_explore"]
    assert not isinstance(nb, str), nb
    by_country = text_of(nb, "by-country")
    for country in COUNTRIES:
        assert country in by_country
    assert "2019" in text_of(nb, "by-year") and "2023" in text_of(nb, "by-year")
    assert "EOS R5" in text_of(nb, "by-camera")
    assert "sky" in text_of(nb, "keywords") and "teal" in text_of(nb, "colors")
    failures = text_of(nb, "failures")
    assert "http_4xx" in failures and "undecodable" in failures
    assert "Traceback" not in "".join(text_of(nb, c.get("id")) for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("store", FULL, indirect=True)
def test_search_grids_show_the_photos_search_returns_with_escaped_descriptions(executed, store):
    nb = executed["02_search"]
    assert not isinstance(nb, str), nb
    with open_store(**store["backend"]) as db:
        found = search.text("a dog on a beach", 8, db=db, device="cpu")
        want = found["photo_id"].tolist()
        japan = set(
            db.query_clickhouse("SELECT photo_id FROM photos FINAL WHERE photo_location_country = 'Japan'")["photo_id"]
        )
    page = html_of(nb, "text-search")
    assert grid_ids(page) == want and len(want) == 8
    assert page.count("data:image/jpeg;base64,") == 8  # every result is cached: thumbnails, no URLs
    assert page.count('class="d">') == 8
    for description in found["description"]:
        assert f"<br>{html.escape(description)}</figcaption>" in page
    grids = ("text-search", "image-search", "similar-search", "combined-search", "crop-search", "mmr-search")
    for cell_id in grids[1:]:
        assert len(grid_ids(html_of(nb, cell_id))) == 8, cell_id
    every = "".join(html_of(nb, c) for c in grids)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot; &lt;script&gt;" in every and "<script>" not in every
    anchor = want[0]
    assert anchor not in grid_ids(html_of(nb, "similar-search"))
    # Japan and Kenya have the most photos (6 each), ties by name: the filter picks Japan.
    filtered = grid_ids(html_of(nb, "filtered-search"))
    assert filtered and set(filtered) <= japan and "country = Japan" in html_of(nb, "filtered-search")
    facets = text_of(nb, "facets")
    assert "keyword" in facets and "Japan" in facets and "teal" in facets
    # The generated photos have no city: the one facet with nothing to count says why.
    assert f"city: nothing to count ({NONE.format('a city')})" in facets
    assert "country: nothing to count" not in facets and "keyword: nothing to count" not in facets


@pytest.mark.parametrize("store", FULL, indirect=True)
def test_embedding_map_draws_every_photo_colored_by_country_with_thumbnails(executed):
    nb = executed["03_embedding_map"]
    assert not isinstance(nb, str), nb
    page = html_of(nb, "pca-map")
    assert page.count("<circle") >= N and "<svg" in page and "PC1 (" in page
    for country in COUNTRIES:
        assert re.search(rf">{country} \(\d+\)</text>", page), country
    assert "(missing) (" in page  # the photos without a country
    assert 0 < page.count("<image ") <= 40
    assert "<script>" not in page
    assert "2021" in html_of(nb, "year-map")
    umap = text_of(nb, "umap-map")
    assert "umap-learn" in umap or "<svg" in umap


@pytest.mark.parametrize("store", FULL, indirect=True)
def test_quality_finds_the_planted_duplicate_lists_outliers_and_evaluates(executed):
    nb = executed["04_quality"]
    assert not isinstance(nb, str), nb
    assert "nb0022 / nb0023" in html_of(nb, "duplicates")
    assert len(grid_ids(html_of(nb, "centroid-outliers"))) == 12
    isolated = html_of(nb, "isolated-outliers")
    assert len(grid_ids(isolated)) == 12 and "neighbor_id: nb" in isolated
    # Every embedded photo has a description: N captions, each with its cached image.
    assert f"{N} images (0 failed), {N} captions, {N} with an image" in text_of(nb, "evaluation")
    metrics = text_of(nb, "evaluation-metrics")
    assert "recall@1" in metrics and "mrr" in metrics


# --- a store whose photos have no metadata ----------------------------------------------------

#: The words a cell shows for a field that no photo of the store has.
NONE = "no photo of this store has {}: the source had none"


@pytest.mark.parametrize("store", BARE, indirect=True)
def test_explore_says_in_words_that_the_photos_have_no_metadata(executed):
    nb = executed["01_explore"]
    assert not isinstance(nb, str), nb
    for cell_id, words in (
        ("by-country", "a country"),
        ("by-year", "a submission date"),
        ("by-camera", "a camera make or model"),
        ("keywords", "a keyword"),
        ("colors", "colors"),
    ):
        assert NONE.format(words) in text_of(nb, cell_id), cell_id
        assert NONE.format(words) in text_of(nb, "coverage"), words
    assert f"{N + 2} photos" in text_of(nb, "coverage")
    assert NONE.format("a country") + ", so this example is skipped" in text_of(nb, "own-sql")
    failures = text_of(nb, "failures")
    assert "http_4xx" in failures and "undecodable" in failures


@pytest.mark.parametrize("store", BARE, indirect=True)
def test_search_on_photos_without_metadata_skips_the_filter_and_facets_with_the_reason(executed, store):
    nb = executed["02_search"]
    assert not isinstance(nb, str), nb
    with open_store(**store["backend"]) as db:
        want = search.text("a dog on a beach", 8, db=db, device="cpu")["photo_id"].tolist()
    assert grid_ids(html_of(nb, "text-search")) == want and len(want) == 8
    for cell_id in ("image-search", "similar-search", "combined-search", "crop-search", "mmr-search"):
        assert len(grid_ids(html_of(nb, cell_id))) == 8, cell_id
    filtered = text_of(nb, "filtered-search")
    assert NONE.format("a country") + ", so the country filter is skipped" in filtered
    assert not grid_ids(filtered)
    facets = text_of(nb, "facets")
    for facet in search.FACETS:
        assert f"{facet}: nothing to count ({NONE.format(render.FIELDS[facet])})" in facets, facet


@pytest.mark.parametrize("store", BARE, indirect=True)
def test_embedding_map_of_photos_without_metadata_says_why_the_points_are_one_color(executed):
    nb = executed["03_embedding_map"]
    assert not isinstance(nb, str), nb
    page = html_of(nb, "pca-map")
    assert page.count("<circle") >= N and "PC1 (" in page and "<image " in page
    assert "no photo on this map has a country, so the points are not colored by country" in page
    year_map = html_of(nb, "year-map")
    assert "no photo on this map has a submission date, so the points are not colored by year" in year_map
    assert NONE.format("a country") in text_of(nb, "coverage")


@pytest.mark.parametrize("store", BARE, indirect=True)
def test_quality_without_descriptions_finds_duplicates_and_says_why_there_is_no_evaluation(executed):
    nb = executed["04_quality"]
    assert not isinstance(nb, str), nb
    assert "nb0022 / nb0023" in html_of(nb, "duplicates")
    assert len(grid_ids(html_of(nb, "centroid-outliers"))) == 12
    assert len(grid_ids(html_of(nb, "isolated-outliers"))) == 12
    skipped = NONE.format("a description (photographer's or AI)") + ", so the evaluation is skipped"
    for cell_id in ("evaluation", "evaluation-metrics", "evaluation-worst"):
        assert skipped in text_of(nb, cell_id), cell_id


def test_metadata_coverage_counts_the_photos_with_each_field(store):
    with open_store(**store["backend"]) as db:
        coverage = render.metadata_coverage(db)
    assert coverage.photos == N + 2  # the two failed downloads are photos too
    if store["kind"] == "bare":
        assert coverage.counts == dict.fromkeys(render.FIELDS, 0)
        assert not coverage.has("country") and coverage.why_none("country") == NONE.format("a country")
    else:
        assert coverage.counts == {
            "country": 20,
            "city": 0,
            "photographer": N,
            "camera_make": 16,
            "camera_model": 16,
            "camera": 16,
            "year": N,
            "featured": N,
            "description": N,
            "caption": N,
            "keyword": N,
            "color": N,
        }
        assert coverage.has("country") and coverage.why_none("country") is None
        assert coverage.skipped("country", "the country filter") is None
        skipped = str(coverage.skipped("city", "the city filter"))
        assert skipped == NONE.format("a city") + ", so the city filter is skipped"


# --- the helpers the notebooks use, without a store -------------------------------------------


def test_first_value_never_indexes_an_empty_result_and_no_match_says_which_filter():
    assert render.first_value(pd.DataFrame({"country": pd.Series([], dtype="object")}), "country") is None
    assert render.first_value(pd.DataFrame({"country": [None, None]}), "country") is None
    assert render.first_value(pd.DataFrame({"country": [None, "", "Japan", "Peru"]}), "country") == "Japan"
    with pytest.raises(BadArgument):
        render.first_value(pd.DataFrame({"city": ["x"]}), "country")
    words = render.no_match(country="Iceland", color=None, keywords_any=())
    assert words == "no photos match country='Iceland'"
    empty = pd.DataFrame(columns=["photo_id", "distance", "description"])
    page = render.image_grid(empty, None, title="t", empty=words).html
    assert "no photos match country=&#x27;Iceland&#x27;" in page and "(no results)" not in page
    assert "(no results)" in render.image_grid(empty, None).html
    pairs = render.pair_grid(pd.DataFrame(columns=["photo_id_a", "photo_id_b", "distance"]), None, empty="none <close>")
    assert "none &lt;close&gt;" in pairs.html


def test_coverage_words_for_an_empty_store_and_for_facets_missing_from_the_top_photos():
    empty = render.Coverage(0, {})
    assert empty.why_none("country") == "this store has no photos yet: run clipsql refresh"
    assert (
        str(empty.skipped("country", "the country filter"))
        == "this store has no photos yet: run clipsql refresh, so the country filter is skipped"
    )
    with pytest.raises(BadArgument):
        empty.has("shoe_size")
    coverage = render.Coverage(10, {"country": 4, "keyword": 3, "camera_make": 2, "photographer": 9, "color": 1})
    assert str(coverage.skipped("country", "x", otherwise="nothing left")) == "nothing left, so x is skipped"
    facets = pd.DataFrame(
        {"facet": ["color", "country", "photographer"], "value": ["teal", "Japan", "<b>u</b>"], "photos": [1, 4, 9]}
    )
    shown = render.explain_facets(facets, coverage, n=100)
    text = repr(shown)
    assert f"city: nothing to count ({NONE.format('a city')})" in text
    assert (
        "keyword: nothing to count (none of the 100 nearest photos has a keyword; 3 photos of this store have one)"
    ) in text
    assert "camera_make: nothing to count (none of the 100 nearest photos has a camera make;" in text
    assert "country: nothing" not in text and "Japan" in text  # the table under the words
    assert "<b>u</b>" not in shown._repr_html_() and "&lt;b&gt;u&lt;/b&gt;" in shown._repr_html_()
    assert render.explain_facets(facets, coverage, n=100, facets=["color", "country"]) is facets
    counts = pd.DataFrame({"country": [None], "photos": [10]})
    assert render.explain_counts(counts, "country", coverage) is counts
    note = render.explain_counts(counts, "city", coverage)
    assert repr(note).startswith(NONE.format("a city") + "\n") and "10" in repr(note)
    assert repr(render.explain_counts(counts.iloc[:0], "city", coverage)) == NONE.format("a city")
    assert "share of 10" in coverage._repr_html_() and NONE.format("a city") in repr(coverage)


def test_embedding_map_of_a_column_without_values_is_one_color_and_says_so():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8))
    frame = pd.DataFrame(
        {
            "photo_id": [f"p{i}" for i in range(6)],
            "country": [None] * 6,
            "year": [np.nan] * 6,
            "city": ["Lima", None, None, None, None, None],
        }
    )
    for column, words in (("country", "a country"), ("year", "a submission date")):
        page = render.embedding_map(vectors, frame, color_by=column, thumbnails=False).html
        assert f"no photo on this map has {words}, so the points are not colored by {column}" in page
        assert page.count(f'fill="{render.PALETTE[0]}"') >= 6 and render.MISSING_COLOR not in page
    page = render.embedding_map(vectors, frame, color_by="city", thumbnails=False).html
    assert "no photo on this map has" not in page and "(missing) (5)" in page
