"""The plot helpers of clipsql.render: image grids with thumbnails from the image cache or
the photo's URL, escaped text, and embedding maps whose projection is checked numerically."""

from __future__ import annotations

import base64
import importlib.util
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipsql import render
from clipsql.errors import BadArgument
from conftest import jpeg_bytes


@pytest.fixture
def image_dir(tmp_path):
    """An image cache with photos a, b (400x300) and c (a corrupt file)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, pid in enumerate(("a", "b")):
        (folder / f"{pid}.jpg").write_bytes(jpeg_bytes(i, size=(400, 300)))
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    return folder


def results(ids, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "photo_id": ids,
            "distance": np.linspace(0.1, 0.5, len(ids)),
            "description": [f"photo {p}" for p in ids],
            "photo_url": [f"https://unsplash.com/photos/{p}" for p in ids],
            "photo_image_url": [f"https://images.example/{p}.jpg" for p in ids],
        }
    )
    return frame.assign(**columns)


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)]


def test_grid_embeds_cached_thumbnails_and_falls_back_to_the_photo_url(image_dir):
    frame = results(["a", "b", "c", "d"])
    frame.loc[3, "photo_image_url"] = "file:///etc/passwd"
    figure = render.image_grid(frame, image_dir, title="beach")
    page = figure.html
    thumbs = data_uris(page)
    assert len(thumbs) == 2  # a and b are cached
    for blob in thumbs:
        with Image.open(io.BytesIO(blob)) as im:
            assert im.format == "JPEG" and max(im.size) == render.THUMB_PX  # shrunk from 400x300
    assert 'src="https://images.example/c.jpg"' in page  # corrupt cache file: the URL instead
    assert 'alt="d (no image)"' in page and "file://" not in page  # no http(s) URL: no image at all
    assert [m for m in re.findall(r'<span class="id">([^<]*)</span>', page)] == ["a", "b", "c", "d"]
    assert re.findall(r'<span class="d">([^<]*)</span>', page) == ["0.1000", "0.2333", "0.3667", "0.5000"]
    assert page.count('<a href="https://unsplash.com/photos/') == 4
    assert page.startswith("<!DOCTYPE html>") and "<h1>beach</h1>" in page
    # Jupyter shows the same grid as a fragment whose style applies to the grid only.
    shown = figure._repr_html_()
    assert "<html" not in shown and shown.count("<figure>") == 4
    style = shown.split("<style>")[1].split("</style>")[0]
    assert all(rule.startswith(".clipsql") for rule in re.findall(r"(?m)^([^{}\n]+)\{", style))


def test_grid_without_an_image_cache_uses_urls(image_dir):
    page = render.image_grid(results(["a", "b"]), None).html
    assert "data:image" not in page and page.count('src="https://images.example/') == 2


def test_every_text_is_escaped_and_only_http_links_survive(tmp_path):
    frame = pd.DataFrame(
        [
            {
                "photo_id": "<b>x</b>",
                "distance": 0.5,
                "description": '<script>alert("1")</script> & co',
                "photo_url": "javascript:alert(1)",
                "photo_image_url": 'https://x.example/"onerror="1.jpg',
                "city": "<i>Reykjavík</i>",
            }
        ]
    )
    page = render.image_grid(frame, tmp_path, title="<title>", caption_columns=["distance", "description", "city"]).html
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; co" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "javascript:" not in page and '"onerror="' not in page
    assert "city: &lt;i&gt;Reykjavík&lt;/i&gt;" in page and "<title>&lt;title&gt;</title>" in page


def test_write_html_grid_saves_the_same_grid(image_dir, tmp_path):
    frame = results(["a", "b", "zz"])
    path = render.write_html_grid(frame, tmp_path / "out" / "grid.html", image_dir, title="t")
    assert path.read_text(encoding="utf-8") == render.image_grid(frame, image_dir, title="t").html
    empty = render.write_html_grid(frame.iloc[:0], tmp_path / "empty.html", image_dir).read_text(encoding="utf-8")
    assert "(no results)" in empty and "<figure>" not in empty


def test_pair_grid_shows_both_photos_and_the_distance(image_dir, tmp_path):
    pairs = pd.DataFrame({"photo_id_a": ["a", "a"], "photo_id_b": ["b", "<c>"], "distance": [0.01, 0.04]})
    page = render.write_html_pairs(pairs, tmp_path / "pairs.html", image_dir).read_text(encoding="utf-8")
    assert page.count('<div class="pair">') == 2 and len(data_uris(page)) == 3
    assert "a / b" in page and "a / &lt;c&gt;" in page and '<span class="d">0.0100</span>' in page


def test_grid_arguments_are_checked(image_dir):
    with pytest.raises(BadArgument, match="needs the column.s. photo_id"):
        render.image_grid(pd.DataFrame({"id": ["a"]}), image_dir)
    with pytest.raises(BadArgument, match="neighbor_id"):
        render.image_grid(results(["a"]), image_dir, caption_columns=["distance", "neighbor_id"])
    with pytest.raises(BadArgument, match="photo_id_b"):
        render.pair_grid(pd.DataFrame({"photo_id_a": ["a"], "distance": [0.1]}), image_dir)


# --- projections -------------------------------------------------------------------------


def planted_clusters(per: int = 60, seed: int = 0, dim: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Three clusters of unit vectors in dim-d around random centers; (vectors, labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, dim))
    labels = np.repeat(np.arange(3), per)
    vectors = centers[labels] + 0.15 * rng.standard_normal((3 * per, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("dim", [512, 16], ids=["fewer-rows-than-dims", "more-rows-than-dims"])
def test_pca_separates_planted_clusters_and_its_first_axis_carries_the_most_variance(dim):
    vectors, labels = planted_clusters(dim=dim)
    coords = render.project_2d(vectors)
    assert coords.shape == (len(vectors), 2) and coords.dtype == np.float64
    means = np.stack([coords[labels == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(coords[labels == k] - means[k], axis=1).max() for k in range(3))
    gaps = [np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread  # every cluster lies apart from the others
    # The axes are the top two principal components: their variances are the two largest
    # eigenvalues of the covariance, in order, and they are uncorrelated.
    eigen = np.sort(np.linalg.eigvalsh(np.cov(vectors.astype(np.float64), rowvar=False)))[::-1]
    variances = coords.var(axis=0, ddof=1)
    np.testing.assert_allclose(variances, eigen[:2], rtol=1e-6)
    assert variances[0] >= variances[1]
    assert abs(np.corrcoef(coords.T)[0, 1]) < 1e-6
    np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-9)


def test_pca_is_deterministic_and_follows_row_order():
    vectors, _ = planted_clusters(per=20, seed=1)
    order = np.random.default_rng(2).permutation(len(vectors))
    first = render.project_2d(vectors)
    np.testing.assert_allclose(render.project_2d(vectors[order]), first[order], atol=1e-9)
    np.testing.assert_array_equal(render.project_2d(vectors), first)


def test_pca_of_degenerate_inputs_gives_zeros_not_errors():
    np.testing.assert_array_equal(render.project_2d(np.ones((1, 512))), np.zeros((1, 2)))
    np.testing.assert_array_equal(render.project_2d(np.ones((5, 512))), np.zeros((5, 2)))
    line = np.outer(np.arange(4.0), np.ones(3))
    coords = render.project_2d(line)
    assert np.all(coords[:, 1] == 0) and coords[0, 0] < coords[-1, 0]


@pytest.mark.parametrize(
    "vectors, message",
    [
        (np.zeros(512), "shape .n, d."),
        (np.zeros((0, 512)), "shape .n, d."),
        (np.array([[1.0, np.nan]]), "NaN or infinite"),
        ([["x", "y"]], "array of numbers"),
    ],
)
def test_projection_rejects_bad_vectors(vectors, message):
    with pytest.raises(BadArgument, match=message):
        render.project_2d(vectors)


def test_projection_methods():
    with pytest.raises(BadArgument, match="pca, umap"):
        render.project_2d(np.eye(3), "tsne")
    if importlib.util.find_spec("umap") is None:
        with pytest.raises(ModuleNotFoundError, match="umap-learn"):
            render.project_2d(np.eye(5), "umap")
    else:
        vectors, _ = planted_clusters(per=20)
        assert render.project_2d(vectors, "umap").shape == (60, 2)


# --- embedding map -----------------------------------------------------------------------


def map_frame(n: int) -> pd.DataFrame:
    countries = ["Iceland", "Japan", "<Peru>", None]
    return pd.DataFrame(
        {
            "photo_id": [f"p{i:03d}" for i in range(n)],
            "description": [f'"{i}" & <b>' for i in range(n)],
            "country": [countries[i % 4] for i in range(n)],
            "views": np.arange(n) * 1000.0,
            "year": [2019 + i % 3 for i in range(n)],
            "photo_image_url": [f"https://images.example/p{i:03d}.jpg" if i % 2 else None for i in range(n)],
        }
    )


def circles(page: str) -> list[tuple[float, float, str, str]]:
    return [
        (float(x), float(y), color, tip)
        for x, y, color, tip in re.findall(
            r'<circle cx="([\d.]+)" cy="([\d.]+)" r="[\d.]+" fill="(#[0-9a-f]{6})"[^>]*>'
            r"<title>([^<]*)</title>",
            page,
        )
    ]


def test_map_colors_points_by_a_column_with_a_legend_and_thumbnails(tmp_path):
    vectors, labels = planted_clusters(per=20)
    frame = map_frame(60)
    cache = tmp_path / "images"
    cache.mkdir()
    for i in (0, 2, 4):
        (cache / f"p{i:03d}.jpg").write_bytes(jpeg_bytes(i, size=(200, 150)))
    figure = render.embedding_map(vectors, frame, color_by="country", image_dir=cache, max_thumbnails=5)
    page = figure._repr_html_()
    points = circles(page)
    assert len(points) == 60
    by_country = {}
    for (_, _, color, tip), country in zip(points, frame["country"]):
        by_country.setdefault(country if isinstance(country, str) else None, set()).add(color)
        assert tip.startswith("p") and "&quot;" in tip and "&amp; &lt;b&gt;" in tip
    assert all(len(colors) == 1 for colors in by_country.values())  # one color per country
    assert len({next(iter(c)) for c in by_country.values()}) == 4
    assert by_country[None] == {render.MISSING_COLOR}
    for label in ("Iceland (15)", "Japan (15)", "&lt;Peru&gt; (15)", "(missing) (15)"):
        assert f">{label}</text>" in page
    svg = page.split("<svg", 1)[1]
    assert "<Peru>" not in svg and "<b>" not in svg
    # Thumbnails: at most 5, the 3 cached ones first, then http(s) URLs (odd rows).
    assert page.count("<image ") == 5 and page.count('href="data:image/jpeg;base64,') == 3
    # Points lie inside the plot frame.
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    assert xs.min() > 36 and xs.max() < 960 - 220 - 36 and ys.min() > 36 and ys.max() < 640 - 36
    assert "PC1 (" in page and "% of variance)" in page
    saved = figure.save(tmp_path / "map.html").read_text(encoding="utf-8")
    assert saved.startswith("<!DOCTYPE html>") and saved.count("<circle") == page.count("<circle")


def test_map_numeric_columns_get_a_gradient_or_ordered_categories():
    vectors, _ = planted_clusters(per=20)
    frame = map_frame(60)
    page = render.embedding_map(vectors, frame, color_by="views", thumbnails=False).html
    colors = [c for _, _, c, _ in circles(page)]
    assert colors[0] == render.GRADIENT[0] and colors[-1] == render.GRADIENT[-1]
    assert len(set(colors)) > 30 and ">0</text>" in page and ">59000</text>" in page
    page = render.embedding_map(
        vectors, frame.assign(year=frame["year"].astype(float)), color_by="year", thumbnails=False
    ).html
    assert re.findall(r">(\d{4}) \(20\)</text>", page) == ["2019", "2020", "2021"]


def test_map_without_color_column_and_with_unknown_ones():
    vectors, _ = planted_clusters(per=5)
    frame = map_frame(15)
    page = render.embedding_map(vectors, frame, thumbnails=False).html
    assert {c for _, _, c, _ in circles(page)} == {render.PALETTE[0]}
    with pytest.raises(
        BadArgument,
        match=r"color_by column 'continent' is not in the frame; "
        r"its columns are photo_id, description, country",
    ):
        render.embedding_map(vectors, frame, color_by="continent")
    with pytest.raises(BadArgument, match="vectors have 15 rows but the frame has 14"):
        render.embedding_map(vectors, frame.iloc[:14])
    with pytest.raises(BadArgument, match="method must be"):
        render.embedding_map(vectors, frame, method="tsne")
    with pytest.raises(BadArgument, match="photo_id"):
        render.embedding_map(vectors, frame.drop(columns="photo_id"))
