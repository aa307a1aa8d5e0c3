"""Plots of search results and embeddings as self-contained HTML and SVG, the same in a
Jupyter notebook and in a file (no matplotlib, nothing fetched by the page itself).

Public entry points, each returning an :class:`HtmlFigure` (Jupyter shows it through
`_repr_html_`; `.html` is a standalone page, `.save(path)` writes it):

- :func:`image_grid`: photo results (a thumbnail per photo, its distance and description
  under it), in the frame's order;
- :func:`pair_grid`: near-duplicate pairs side by side;
- :func:`embedding_map`: a 2-D projection of photo embeddings (:func:`project_2d`: PCA by
  numpy's SVD, or UMAP when the `umap-learn` package is installed) as an SVG scatter,
  points colored by a metadata column, with thumbnails at a spread-out sample of points.

:func:`write_html_grid` and :func:`write_html_pairs` (the CLI's `--html FILE`) save the
first two. Thumbnails come from the store's image cache (`<store>/images/<photo_id>.jpg`),
shrunk and embedded as JPEG data URIs, so a saved file opens anywhere without the store; a
photo that is not cached shows its photo_image_url instead (http and https URLs only), or
an empty frame. Every text is HTML-escaped; links other than http(s) are dropped.

A store may hold photos without metadata (an image folder, or a release whose country,
keyword, color or camera columns are empty), and a filter may match nothing. The notebooks
say so in words, never with a bare empty table: :func:`metadata_coverage` counts the photos
that have each metadata field (a :class:`Coverage`, whose :meth:`Coverage.why_none` and
:meth:`Coverage.skipped` give the words), :func:`explain_counts` and :func:`explain_facets`
annotate a count table or a facet table whose values are missing, :func:`no_match` words an
empty filtered result, and :func:`first_value` picks an example value without indexing into
an empty frame. Each returns a :class:`Note` (text, HTML in Jupyter) where there is nothing
to show.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import cached_image
from .errors import BadArgument
from .queries import get_query

log = logging.getLogger(__name__)

#: Longest side of a grid thumbnail, pixels.
THUMB_PX = 256
#: Longest side of a thumbnail placed on an embedding map, pixels (as embedded; drawn smaller).
MAP_THUMB_PX = 96
#: Projection methods of :func:`project_2d`.
PROJECTIONS = ("pca", "umap")
#: Point colors of a categorical color column (Tableau 10), in order of frequency.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#8cd17d")
OTHER_COLOR = "#bab0ac"
MISSING_COLOR = "#e6e6e6"
#: Stops of the gradient of a numeric color column (viridis), low to high.
GRADIENT = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")

_STYLE = """.clipsql{font-family:system-ui,sans-serif}
.clipsql h1{font-size:1.1rem;margin:.2rem 0 .6rem}
.clipsql .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.clipsql figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
.clipsql figure img{display:block;width:100%;height:200px;object-fit:cover;border-radius:4px;background:#eee}
.clipsql figcaption{font-size:.8rem;line-height:1.3;margin-top:4px;overflow-wrap:anywhere;color:#222}
.clipsql .pair{display:flex;gap:4px}.clipsql .pair img{width:50%}
.clipsql .d{font-weight:600}.clipsql .id{color:#555}.clipsql .c{color:#444}
.clipsql svg{background:#fff;border:1px solid #ddd;border-radius:6px;max-width:100%;height:auto}
.clipsql svg text{font-family:system-ui,sans-serif;fill:#333}
.clipsql .note{margin:.3rem 0;padding:.4rem .6rem;border-left:4px solid #edc948;background:#fffbea;color:#333}
.clipsql table{border-collapse:collapse;font-size:.85rem}
.clipsql th,.clipsql td{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}"""


class HtmlFigure:
    """A rendered figure: an HTML fragment (already escaped) and its title.

    Jupyter displays it (:meth:`_repr_html_`); :attr:`html` is a standalone page and
    :meth:`save` writes that page to a file.

    Attributes:
        title: the heading (plain text; escaped when rendered).
        body: the HTML fragment under the heading.
    """

    def __init__(self, title: str, body: str):
        self.title = str(title)
        self.body = body

    def _fragment(self) -> str:
        heading = f"<h1>{html.escape(self.title)}</h1>\n" if self.title else ""
        return f'<div class="clipsql">\n{heading}{self.body}\n</div>'

    def _repr_html_(self) -> str:
        """The figure as Jupyter shows it: a <style> scoped to `.clipsql` and the fragment."""
        return f"<style>{_STYLE}</style>\n{self._fragment()}"

    @property
    def html(self) -> str:
        """A standalone UTF-8 HTML page holding the figure (no scripts, no external CSS)."""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title or 'clipsql')}</title>"
            f"<style>body{{margin:1rem;background:#fafafa}}\n{_STYLE}</style></head>\n"
            f"<body>{self._fragment()}</body></html>\n"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write :attr:`html` to `path` (parent folders created). Returns the path written."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.html, encoding="utf-8")
        return target

    def __repr__(self) -> str:
        return f"<HtmlFigure {self.title!r}: {len(self.body)} characters of HTML>"


# --- thumbnails --------------------------------------------------------------------------


def _is_http(value) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def thumbnail_src(
    image_dir: str | os.PathLike | None, photo_id: str, fallback_url: str | None = None, px: int = THUMB_PX
) -> str | None:
    """What an <img src> shows for a photo: its cached image shrunk to `px` pixels on the
    longest side as a JPEG data URI; else `fallback_url` when it is an http(s) URL; else None.

    An unreadable cache file is logged (warning) and treated as not cached.
    """
    from PIL import Image

    path = cached_image(image_dir, str(photo_id))
    if path is not None:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, much faster
                im = im.convert("RGB")
                im.thumbnail((px, px))
                out = io.BytesIO()
                im.save(out, format="JPEG", quality=80)
            return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
        except (OSError, ValueError) as exc:
            log.warning("cannot read cached image %s: %s", path, exc)
    return str(fallback_url) if _is_http(fallback_url) else None


def _img(src: str | None, alt: str) -> str:
    if src is None:
        return f'<img alt="{html.escape(alt)} (no image)">'
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">'


def _text(value) -> str:
    """A cell as display text: '' for None/NaN, 4 decimals for floats."""
    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def _grid(cells: list[str], title: str, empty: str) -> HtmlFigure:
    body = '<div class="grid">\n' + "\n".join(cells) + "\n</div>" if cells else f"<p>{html.escape(empty)}</p>"
    return HtmlFigure(title, body)


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise BadArgument(f"{what} needs a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BadArgument(
            f"{what} needs the column(s) {', '.join(missing)}; "
            f"the frame has {', '.join(map(str, frame.columns)) or 'none'}"
        )


# --- grids -------------------------------------------------------------------------------


def image_grid(
    frame: pd.DataFrame,
    image_dir: str | os.PathLike | None,
    *,
    title: str | None = None,
    caption_columns: Sequence[str] | None = None,
    thumb_px: int = THUMB_PX,
    empty: str | None = None,
) -> HtmlFigure:
    """Photo results as an image grid, one cell per row in the frame's order.

    Each cell shows the photo (cached thumbnail, else photo_image_url; linked to photo_url
    when that is an http(s) URL), then its photo_id and the caption columns: a float as 4
    decimals (`distance` in bold), anything else as text.

    Args:
        frame: one row per photo; column photo_id, optionally photo_url, photo_image_url and
            the caption columns (a search result has them all).
        image_dir: the store's image cache (`Store.image_dir`, `<store>/images`), or None.
        title: heading (default none).
        caption_columns: columns shown under each photo; default those of distance and
            description that the frame has.
        thumb_px: longest side of an embedded thumbnail, pixels.
        empty: what the figure says when the frame has no row, e.g. why (see :func:`no_match`);
            default "(no results)".

    Returns:
        An :class:`HtmlFigure`.

    Raises:
        BadArgument: not a DataFrame, no photo_id column, or a caption column it lacks.
    """
    _require(frame, ["photo_id"], "image_grid")
    if caption_columns is None:
        caption_columns = [c for c in ("distance", "description") if c in frame.columns]
    else:
        caption_columns = [caption_columns] if isinstance(caption_columns, str) else list(caption_columns)
        _require(frame, caption_columns, "image_grid")
    cells = []
    for row in frame.to_dict("records"):
        pid = str(row["photo_id"])
        image = _img(thumbnail_src(image_dir, pid, row.get("photo_image_url"), thumb_px), pid)
        link = row.get("photo_url")
        if _is_http(link):
            image = f'<a href="{html.escape(link)}">{image}</a>'
        parts = []
        if "distance" in caption_columns:
            parts.append(f'<span class="d">{html.escape(_text(row["distance"]))}</span> ')
        parts.append(f'<span class="id">{html.escape(pid)}</span>')
        for column in caption_columns:
            if column == "distance":
                continue
            value = _text(row[column])
            if column == "description":
                parts.append(f"<br>{html.escape(value)}")
            elif value:
                parts.append(f'<br><span class="c">{html.escape(str(column))}: {html.escape(value)}</span>')
        cells.append(f"<figure>{image}<figcaption>{''.join(parts)}</figcaption></figure>")
    return _grid(cells, title or "", empty or "(no results)")


def pair_grid(
    frame: pd.DataFrame,
    image_dir: str | os.PathLike | None,
    *,
    title: str | None = None,
    thumb_px: int = THUMB_PX,
    empty: str | None = None,
) -> HtmlFigure:
    """Near-duplicate pairs side by side, one cell per row: both photos, the distance and
    the two photo_ids.

    Args:
        frame: columns photo_id_a, photo_id_b, distance (as :func:`clipsql.search.duplicates`
            returns); optionally photo_image_url_a / photo_image_url_b as fallbacks.
        image_dir: the store's image cache, or None.
        title: heading (default none).
        thumb_px: longest side of an embedded thumbnail, pixels.
        empty: what the figure says when the frame has no row; default "(no pairs)".

    Raises:
        BadArgument: not a DataFrame, or a required column missing.
    """
    _require(frame, ["photo_id_a", "photo_id_b", "distance"], "pair_grid")
    cells = []
    for row in frame.to_dict("records"):
        a, b = str(row["photo_id_a"]), str(row["photo_id_b"])
        images = _img(thumbnail_src(image_dir, a, row.get("photo_image_url_a"), thumb_px), a) + _img(
            thumbnail_src(image_dir, b, row.get("photo_image_url_b"), thumb_px), b
        )
        cells.append(
            f'<figure><div class="pair">{images}</div><figcaption><span class="d">'
            f"{html.escape(_text(row['distance']))}</span> "
            f'<span class="id">{html.escape(a)} / {html.escape(b)}</span></figcaption></figure>'
        )
    return _grid(cells, title or "", empty or "(no pairs)")


def write_html_grid(
    frame: pd.DataFrame, path: str | os.PathLike, image_dir: str | os.PathLike, title: str = "clipsql results"
) -> Path:
    """Save :func:`image_grid` of photo results (columns photo_id, distance, and optionally
    description, photo_url, photo_image_url) as a standalone HTML page.

    Returns:
        The path written.
    """
    return image_grid(frame, image_dir, title=title).save(path)


def write_html_pairs(
    frame: pd.DataFrame, path: str | os.PathLike, image_dir: str | os.PathLike, title: str = "clipsql near-duplicates"
) -> Path:
    """Save :func:`pair_grid` of near-duplicate pairs (columns photo_id_a, photo_id_b,
    distance) as a standalone HTML page.

    Returns:
        The path written.
    """
    return pair_grid(frame, image_dir, title=title).save(path)


# --- projections -------------------------------------------------------------------------


def _as_matrix(vectors) -> np.ndarray:
    try:
        matrix = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadArgument(f"vectors must be an (n, d) array of numbers: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise BadArgument(f"vectors must have shape (n, d) with n, d >= 1, got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise BadArgument("vectors hold NaN or infinite values")
    return matrix


def _pca(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) PCA coordinates and the fraction of the total variance on each axis, (2,)."""
    centered = matrix - matrix.mean(axis=0)
    n, d = centered.shape
    if n > d:
        # The SVD of the (d, d) scatter matrix gives the same axes as that of the (n, d) data
        # (its singular values are the squares), in seconds instead of tens of seconds for
        # 25,000 x 512 on 2 cores.
        _, squares, vt = np.linalg.svd(centered.T @ centered, hermitian=True)
        squares = np.clip(squares, 0.0, None)
    else:
        _, s, vt = np.linalg.svd(centered, full_matrices=False)
        squares = s**2
    coords = np.zeros((n, 2))
    # Axes beyond the data's rank (variance at rounding-noise level) stay exactly 0.
    shown = int(np.sum(squares[:2] > squares[0] * 1e-12)) if len(squares) and squares[0] > 0 else 0
    # Sign convention (as scikit-learn's svd_flip): the largest loading of each axis is positive.
    signs = np.sign(vt[np.arange(shown), np.argmax(np.abs(vt[:shown]), axis=1)])
    signs[signs == 0] = 1.0
    coords[:, :shown] = centered @ (vt[:shown].T * signs)
    total = float(np.sum(squares))
    ratio = np.zeros(2)
    if total > 0:
        ratio[:shown] = squares[:shown] / total
    return coords, ratio


def project_2d(vectors, method: str = "pca", *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Project embeddings to two dimensions.

    "pca": the first two principal components (numpy SVD of the centered vectors, or of
    their (d, d) scatter matrix when n > d, which is faster and gives the same axes): axis 0
    carries the largest variance, axis 1 the next; each axis signed so its largest loading
    is positive, so the result is deterministic. "umap": UMAP with cosine distance
    (`umap-learn`, seeded by `seed`; `n_neighbors` capped at n - 1).

    Args:
        vectors: (n, d) numbers, e.g. (n, 512) float32 L2-normalized CLIP embeddings.
        method: "pca" or "umap".
        seed: UMAP's random_state (PCA is deterministic).
        n_neighbors: UMAP's neighborhood size.

    Returns:
        (n, 2) float64 coordinates, in the vectors' units (PCA) or UMAP's arbitrary units.

    Raises:
        BadArgument: not an (n, d) array of finite numbers, or an unknown method.
        ModuleNotFoundError: method "umap" without the `umap-learn` package installed.
    """
    if method not in PROJECTIONS:
        raise BadArgument(f"method must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    matrix = _as_matrix(vectors)
    if method == "pca":
        return _pca(matrix)[0]
    return _umap(matrix, seed, n_neighbors)


def _umap(matrix: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    try:
        import umap
    except ImportError as exc:
        raise ModuleNotFoundError(
            "method='umap' needs the umap-learn package (pip install umap-learn); method='pca' needs nothing more",
            name="umap",
        ) from exc
    if len(matrix) < 3:
        raise BadArgument(f"UMAP needs at least 3 vectors, got {len(matrix)}; use method='pca'")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), len(matrix) - 1)),
        metric="cosine",
        random_state=int(seed),
    )
    return np.asarray(reducer.fit_transform(matrix), dtype=np.float64)


# --- embedding map -----------------------------------------------------------------------


def _hex_mix(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))


def _gradient(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(GRADIENT) - 1)
    i = min(int(t), len(GRADIENT) - 2)
    return _hex_mix(GRADIENT[i], GRADIENT[i + 1], t - i)


def _number(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _colors(values: pd.Series) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Per point: colors and display values; the legend as (color, label) rows."""
    missing = values.isna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values[~missing].nunique() > len(PALETTE):
        numbers = values.astype("float64").to_numpy()
        low, high = float(np.nanmin(numbers)), float(np.nanmax(numbers))
        span = high - low or 1.0
        colors = [MISSING_COLOR if m else _gradient((x - low) / span) for x, m in zip(numbers, missing)]
        shown = ["" if m else _number(x) for x, m in zip(numbers, missing)]
        legend = [(_gradient(t), _number(low + t * span)) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
        if missing.any():
            legend.append((MISSING_COLOR, f"(missing) ({int(missing.sum())})"))
        return colors, shown, legend
    # Numbers read as numbers (2021, not 2021.0 where a NULL made the column float).
    shown = ["" if m else _number(v) if numeric else str(v) for v, m in zip(values.tolist(), missing)]
    counts = pd.Series([s for s, m in zip(shown, missing) if not m], dtype="object").value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if numeric:  # few distinct numbers (e.g. years): the legend in numeric order
        ranked = sorted(ranked, key=lambda kv: float(kv[0]))
    top = {label: PALETTE[i] for i, (label, _) in enumerate(ranked[: len(PALETTE)])}
    colors = [MISSING_COLOR if m else top.get(s, OTHER_COLOR) for s, m in zip(shown, missing)]
    legend = [(top[label], f"{label} ({count})") for label, count in ranked[: len(PALETTE)]]
    others = sum(count for _, count in ranked[len(PALETTE) :])
    if others:
        legend.append((OTHER_COLOR, f"other ({others})"))
    if missing.any():
        legend.append((MISSING_COLOR, f"(missing) ({int(missing.sum())})"))
    return colors, shown, legend


def _spread_sample(points: np.ndarray, candidates: np.ndarray, k: int, taken: Sequence[int] = ()) -> list[int]:
    """Up to k indices of `candidates` whose points are spread out, also away from the
    points of `taken` (greedy farthest-point sampling; without `taken` it starts from the
    candidate nearest the center), so thumbnails overlap little."""
    if k <= 0 or len(candidates) == 0:
        return []
    xy = points[candidates]
    if len(taken):
        nearest = np.min(np.sum((xy[:, None, :] - points[list(taken)][None, :, :]) ** 2, axis=2), axis=1)
        picked = []
    else:
        first = int(np.argmin(np.sum((xy - xy.mean(axis=0)) ** 2, axis=1)))
        picked = [first]
        nearest = np.sum((xy - xy[first]) ** 2, axis=1)
    while len(picked) < min(k, len(candidates)):
        nxt = int(np.argmax(nearest))
        if nearest[nxt] <= 0:
            break
        picked.append(nxt)
        nearest = np.minimum(nearest, np.sum((xy - xy[nxt]) ** 2, axis=1))
    return [int(candidates[i]) for i in picked]


def embedding_map(
    vectors,
    frame: pd.DataFrame,
    *,
    color_by: str | None = None,
    method: str = "pca",
    thumbnails: bool = True,
    image_dir: str | os.PathLike | None = None,
    max_thumbnails: int = 40,
    title: str | None = None,
    seed: int = 0,
    width: int = 960,
    height: int = 640,
    thumb_size: int = 48,
) -> HtmlFigure:
    """A 2-D map of photo embeddings: an SVG scatter, one point per photo, colored by a
    metadata column, with thumbnails at a spread-out sample of points.

    A categorical column gets one color per value for its 10 most frequent values, "other"
    (gray) for the rest; a numeric column with more than 10 distinct values gets a gradient
    (low = dark violet, high = yellow); missing values are light gray. Each point's tooltip
    names its photo_id, color value and description.

    Args:
        vectors: (n, d) embeddings, e.g. (n, 512) float32 L2-normalized, row i = frame row i.
        frame: n rows; column photo_id, and optionally description, photo_image_url (a
            thumbnail's fallback) and the color column.
        color_by: the column that colors the points; None: one color. A column without any
            value (e.g. country on a store whose source had none) gives one color too, and
            the figure says so in words above the map.
        method: projection, "pca" or "umap" (see :func:`project_2d`).
        thumbnails: place thumbnails: cached images first, then http(s) photo_image_urls.
        image_dir: the store's image cache (`Store.image_dir`), or None.
        max_thumbnails: most thumbnails placed.
        title: heading (default: what is projected and colored).
        seed: UMAP's random_state.
        width, height: SVG size, pixels (the legend takes 220 px of the width).
        thumb_size: side of a drawn thumbnail, pixels.

    Returns:
        An :class:`HtmlFigure`.

    Raises:
        BadArgument: vectors not (n, d) finite numbers, a frame of another length or without
            photo_id, a `color_by` column the frame lacks, an unknown method, a bad size.
        ModuleNotFoundError: method "umap" without `umap-learn` installed.
    """
    _require(frame, ["photo_id"], "embedding_map")
    if color_by is not None and color_by not in frame.columns:
        raise BadArgument(
            f"color_by column {color_by!r} is not in the frame; its columns are {', '.join(map(str, frame.columns))}"
        )
    if method not in PROJECTIONS:
        raise BadArgument(f"method must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    matrix = _as_matrix(vectors)
    if len(matrix) != len(frame):
        raise BadArgument(f"vectors have {len(matrix)} rows but the frame has {len(frame)}")
    for name, value, low in (
        ("width", width, 400),
        ("height", height, 200),
        ("thumb_size", thumb_size, 8),
        ("max_thumbnails", max_thumbnails, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= 10_000:
            raise BadArgument(f"{name} must be an integer from {low} to 10000, got {value!r}")
    if method == "pca":
        coords, ratio = _pca(matrix)
        axes = (f"PC1 ({100 * ratio[0]:.1f}% of variance)", f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    else:
        coords = _umap(matrix, seed, 15)
        axes = ("UMAP 1", "UMAP 2")
    frame = frame.reset_index(drop=True)
    legend: list
    if color_by is None:
        colors, shown, legend = [PALETTE[0]] * len(frame), [""] * len(frame), []
    else:
        colors, shown, legend = _colors(frame[color_by])
    note = ""
    if color_by is not None and len(frame) and _values(frame[color_by]).empty:
        # Nothing to color by: one color, and the words saying why (not a map of gray points).
        colors, legend = [PALETTE[0]] * len(frame), [(PALETTE[0], f"(missing) ({len(frame)})")]
        note = f"no photo on this map has {_words(color_by)}, so the points are not colored by {color_by}"
    title = (
        title
        if title is not None
        else (f"{len(frame)} photos, {method.upper()}" + (f", colored by {color_by}" if color_by and not note else ""))
    )

    legend_w, pad = 220, 36
    plot_w, plot_h = width - legend_w - 2 * pad, height - 2 * pad
    radius = 4 if len(frame) <= 2000 else 2.5
    show_thumbnails = thumbnails and max_thumbnails > 0
    inset = thumb_size / 2 + 2 if show_thumbnails else radius + 4  # keeps marks inside the frame
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    xs = pad + inset + (coords[:, 0] - low[0]) / span[0] * (plot_w - 2 * inset)
    ys = pad + plot_h - inset - (coords[:, 1] - low[1]) / span[1] * (plot_h - 2 * inset)  # SVG y grows down
    ids = frame["photo_id"].astype(str).tolist()
    descriptions = [_text(v) for v in frame["description"]] if "description" in frame.columns else [""] * len(frame)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<rect x="{pad}" y="{pad}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
        f'<text x="{pad + plot_w / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="12">'
        f"{html.escape(axes[0])}</text>",
        f'<text x="20" y="{pad + plot_h / 2:.1f}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 20 {pad + plot_h / 2:.1f})">{html.escape(axes[1])}</text>',
    ]
    if show_thumbnails:
        # Thumbnails first, points on top: every point and its color stay visible.
        # Cached images first (they need no network), then photos with an http(s) URL.
        urls = frame["photo_image_url"].tolist() if "photo_image_url" in frame.columns else [None] * len(frame)
        cached = np.array([cached_image(image_dir, p) is not None for p in ids], dtype=bool)
        remote = np.array([_is_http(u) for u in urls], dtype=bool) & ~cached
        xy = np.column_stack([xs, ys])
        sample = _spread_sample(xy, np.flatnonzero(cached), max_thumbnails)
        sample += _spread_sample(xy, np.flatnonzero(remote), max_thumbnails - len(sample), taken=sample)
        half = thumb_size / 2
        for i in sample:
            src = thumbnail_src(image_dir, ids[i], urls[i], MAP_THUMB_PX)
            if src is None:
                continue
            x, y = xs[i] - half, ys[i] - half
            parts.append(
                f"<g><title>{html.escape(ids[i])}</title>"
                f'<image href="{html.escape(src)}" x="{x:.1f}" y="{y:.1f}" width="{thumb_size}" '
                f'height="{thumb_size}" preserveAspectRatio="xMidYMid slice"/>'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{thumb_size}" height="{thumb_size}" fill="none" '
                f'stroke="{colors[i]}" stroke-width="3"/></g>'
            )
    for i in range(len(frame)):
        tip = (
            ids[i]
            + (f" | {color_by}: {shown[i] or '(missing)'}" if color_by else "")
            + (f" | {descriptions[i][:200]}" if descriptions[i] else "")
        )
        parts.append(
            f'<circle cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{radius}" fill="{colors[i]}" '
            f'fill-opacity="0.85" stroke="#333" stroke-width="0.5"><title>{html.escape(tip)}</title></circle>'
        )
    lx = width - legend_w + 8
    if color_by is not None:
        parts.append(
            f'<text x="{lx}" y="{pad - 10}" font-size="13" font-weight="600">{html.escape(str(color_by))}</text>'
        )
    for row, (color, label) in enumerate(legend):
        y = pad + 6 + row * 20
        parts.append(
            f'<circle cx="{lx + 6}" cy="{y}" r="6" fill="{color}" stroke="#333" stroke-width="0.3"/>'
            f'<text x="{lx + 18}" y="{y + 4}" font-size="12">{html.escape(label[:40])}</text>'
        )
    parts.append("</svg>")
    return HtmlFigure(title, (f'<p class="note">{html.escape(note)}</p>\n' if note else "") + "\n".join(parts))


# --- notes: nothing to show, and why ------------------------------------------------------

#: Metadata fields of a store's photos that a notebook counts, filters, facets or colors by:
#: field -> the words for "a value of it" ("no photo of this store has a country").
FIELDS = {
    "country": "a country",
    "city": "a city",
    "photographer": "a photographer",
    "camera_make": "a camera make",
    "camera_model": "a camera model",
    "camera": "a camera make or model",
    "year": "a submission date",
    "featured": "a featured flag",
    "description": "a description",
    "caption": "a description (photographer's or AI)",
    "keyword": "a keyword",
    "color": "colors",
}
#: The facets of :func:`clipsql.search.facets` (its FACETS), each a field of :data:`FIELDS`.
FACET_FIELDS = ("camera_make", "city", "color", "country", "keyword", "photographer")


#: Photos (not flagged deleted) with a value of each field of FIELDS, in ClickHouse's dialect
#: (DuckDB through clipsql.dialect, as every named query); an empty string counts as no value.
def _words(field) -> str:
    return FIELDS.get(str(field), f"a {field}")


def _values(series: pd.Series) -> pd.Series:
    """The values of a column that count as values: not NULL/NaN, not an empty string."""
    values = series.dropna()
    return values[values.astype(str).str.strip() != ""]


class Note:
    """Words a cell shows where a result has nothing to show (and why), optionally above the
    frame it explains. Jupyter shows it as HTML (:meth:`_repr_html_`), a terminal as text.

    Attributes:
        text: the words, plain text (several lines allowed; escaped when rendered).
        frame: the table shown under the words, or None.
    """

    def __init__(self, text: str, frame: pd.DataFrame | None = None):
        self.text = str(text)
        self.frame = frame

    def _repr_html_(self) -> str:
        lines = "".join(f'<p class="note">{html.escape(line)}</p>' for line in self.text.splitlines() if line)
        table = self.frame.to_html(index=False, na_rep="<NA>") if self.frame is not None else ""
        return f'<style>{_STYLE}</style>\n<div class="clipsql">{lines}{table}</div>'

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        if self.frame is None:
            return self.text
        return f"{self.text}\n{self.frame.to_string(index=False)}"


class Coverage:
    """How many photos of a store (not flagged deleted) have each metadata field of
    :data:`FIELDS`, as :func:`metadata_coverage` counted them.

    Jupyter shows it as a table (field, photos with a value, share), followed by the words
    for every field no photo has.

    Attributes:
        photos: photos in the store (not flagged deleted).
        counts: field -> photos with a value of it.
    """

    def __init__(self, photos: int, counts: Mapping[str, int]):
        self.photos = int(photos)
        self.counts = {field: int(counts.get(field, 0)) for field in FIELDS}

    def _field(self, field: str) -> str:
        if field not in FIELDS:
            raise BadArgument(f"unknown metadata field {field!r}; the fields are {', '.join(FIELDS)}")
        return field

    def has(self, field: str) -> bool:
        """True when at least one photo of the store has a value of `field`.

        Raises:
            BadArgument: a field not in :data:`FIELDS`.
        """
        return self.counts[self._field(field)] > 0

    def why_none(self, field: str) -> str | None:
        """Why nothing has a value of `field`: "no photo of this store has a country: the
        source had none" (or "this store has no photos yet: run clipsql refresh"); None when
        some photo has one.

        Raises:
            BadArgument: a field not in :data:`FIELDS`.
        """
        if self.has(field):
            return None
        if self.photos == 0:
            return "this store has no photos yet: run clipsql refresh"
        return f"no photo of this store has {_words(field)}: the source had none"

    def skipped(self, field: str, what: str, otherwise: str | None = None) -> Note | None:
        """The words of a step skipped for lack of `field`: "no photo of this store has a
        country: the source had none, so the country filter is skipped".

        Args:
            field: a field of :data:`FIELDS`.
            what: the step skipped ("the country filter").
            otherwise: the reason when some photo has the field after all (the step had
                nothing to work on for another reason); None: then no note.

        Returns:
            A :class:`Note`, or None (the store has the field, `otherwise` not given).
        """
        reason = self.why_none(field) or otherwise
        return None if reason is None else Note(f"{reason}, so {what} is skipped")

    def frame(self) -> pd.DataFrame:
        """One row per field: field, photos (with a value), share (0..1 of the store's photos)."""
        share = [c / self.photos if self.photos else 0.0 for c in self.counts.values()]
        return pd.DataFrame({"field": list(self.counts), "photos": list(self.counts.values()), "share": share})

    def _lines(self) -> list[str]:
        return [reason for reason in (self.why_none(f) for f in FIELDS) if reason is not None]

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(f)}</td><td>{c}</td><td>{100 * s:.0f}%</td></tr>"
            for f, c, s in self.frame().itertuples(index=False)
        )
        lines = "".join(f'<p class="note">{html.escape(line)}</p>' for line in dict.fromkeys(self._lines()))
        return (
            f'<style>{_STYLE}</style>\n<div class="clipsql"><table><tr><th>field</th><th>photos with a value'
            f"</th><th>share of {self.photos}</th></tr>{rows}</table>{lines}</div>"
        )

    def __repr__(self) -> str:
        table = self.frame().assign(share=lambda f: (100 * f["share"]).round().astype(int).astype(str) + "%")
        return "\n".join([f"{self.photos} photos", table.to_string(index=False), *dict.fromkeys(self._lines())])


def metadata_coverage(db) -> Coverage:
    """Count the photos of a store (not flagged deleted) that have each field of :data:`FIELDS`
    (a string field counts when not empty; keyword and color when the photo has a row in
    keywords / colors): the named query queries/metadata_coverage.sql.

    Args:
        db: an open :class:`clipsql.db.Store` (any engine).

    Returns:
        A :class:`Coverage`.
    """
    row = get_query("metadata_coverage").run(db).iloc[0]
    return Coverage(int(row["photos"]), {field: int(row[field]) for field in FIELDS})


def first_value(frame: pd.DataFrame, column: str):
    """The first value of `column` that counts as a value (not NULL, not an empty string), or
    None when there is none, e.g. the example country of a count table on a store whose
    photos have no country (never an index into an empty result).

    Raises:
        BadArgument: not a DataFrame, or no such column.
    """
    _require(frame, [column], "first_value")
    values = _values(frame[column])
    return None if values.empty else values.iloc[0]


def no_match(**filters) -> str:
    """The words of a filtered result without rows: "no photos match country='Iceland'"
    (filters that are None or empty are left out)."""
    shown = [f"{name}={value!r}" for name, value in filters.items() if value not in (None, (), [], "")]
    return "no photos match " + (" and ".join(shown) if shown else "the query")


def explain_counts(frame: pd.DataFrame, field: str, coverage: Coverage):
    """A count table (photos per country, per year, keyword counts, ...) as it is when some
    photo of the store has a value of `field`; else a :class:`Note` saying that no photo has
    one and why, above the table when it has rows (e.g. every photo counted under a NULL
    country).

    Args:
        frame: the table, e.g. of the named query photos_by_country.
        field: the field counted, one of :data:`FIELDS`.
        coverage: the store's :func:`metadata_coverage`.

    Returns:
        `frame` unchanged, or a :class:`Note`.

    Raises:
        BadArgument: not a DataFrame, or a field not in :data:`FIELDS`.
    """
    _require(frame, [], "explain_counts")
    reason = coverage.why_none(field)
    return frame if reason is None else Note(reason, frame if len(frame) else None)


def explain_facets(frame: pd.DataFrame, coverage: Coverage, n: int, facets: Sequence[str] = FACET_FIELDS):
    """A facet table (:func:`clipsql.search.facets`: columns facet, value, photos) with words
    for every facet that has no value: "city: nothing to count (no photo of this store has a
    city: the source had none)", or, where the store has values but not among the counted
    photos, "nothing to count (none of the 100 nearest photos has a city; 3 photos of this
    store have one)".

    Args:
        frame: the facets.
        coverage: the store's :func:`metadata_coverage`.
        n: how many nearest photos were counted (facets' `n`).
        facets: the facets asked for.

    Returns:
        `frame` unchanged when every facet has a value, else a :class:`Note` (with the frame
        under the words when it has rows).

    Raises:
        BadArgument: not a DataFrame, a column missing, or a facet not in :data:`FIELDS`.
    """
    _require(frame, ["facet", "value", "photos"], "explain_facets")
    shown = set(frame["facet"].astype(str))
    lines = []
    for facet in facets:
        if facet in shown:
            continue
        reason = coverage.why_none(facet)
        if reason is None:
            reason = (
                f"none of the {n} nearest photos has {_words(facet)}; "
                f"{coverage.counts[facet]} photos of this store have one"
            )
        lines.append(f"{facet}: nothing to count ({reason})")
    if not lines:
        return frame
    return Note("\n".join(lines), frame if len(frame) else None)
