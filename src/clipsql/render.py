"""Image grids of search results as one self-contained HTML file.

Public entry points: :func:`write_html_grid` (photo results: a thumbnail per photo with its
distance and description under it) and :func:`write_html_pairs` (near-duplicate pairs).
Thumbnails come from the store's image cache (`<store>/images/<photo_id>.jpg`), shrunk and
embedded as JPEG data URIs, so the file opens anywhere without the store; a photo that is
not cached shows its photo_image_url instead. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: Longest side of an embedded thumbnail, pixels.
THUMB_PX = 256
_STYLE = """body{font-family:system-ui,sans-serif;margin:1rem;background:#fafafa}
h1{font-size:1.1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:200px;object-fit:cover;border-radius:4px;background:#eee}
figcaption{font-size:.8rem;line-height:1.3;margin-top:4px;overflow-wrap:anywhere}
.pair{display:flex;gap:4px}.pair img{width:50%}
.d{font-weight:600}.id{color:#555}"""


def _thumbnail_src(image_dir: Path, photo_id: str, fallback_url: str | None) -> str | None:
    from PIL import Image

    path = Path(image_dir) / f"{photo_id}.jpg"
    if "/" not in photo_id and "\\" not in photo_id and path.is_file():
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB_PX, THUMB_PX))
                out = io.BytesIO()
                im.save(out, format="JPEG", quality=80)
            return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
        except OSError as exc:
            log.warning("cannot read cached image %s: %s", path, exc)
    if fallback_url and str(fallback_url).startswith(("http://", "https://")):
        return str(fallback_url)
    return None


def _img(src: str | None, alt: str) -> str:
    if src is None:
        return f'<img alt="{html.escape(alt)} (no image)">'
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _write(path: str | os.PathLike, text: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def write_html_grid(frame: pd.DataFrame, path: str | os.PathLike, image_dir: str | os.PathLike,
                    title: str = "clipsql results") -> Path:
    """Write photo results (columns photo_id, distance, and optionally description,
    photo_url, photo_image_url) as an image grid, in the frame's order.

    Returns:
        The path written.
    """
    cells = []
    for row in frame.to_dict("records"):
        pid = str(row["photo_id"])
        src = _thumbnail_src(Path(image_dir), pid, row.get("photo_image_url"))
        description = row.get("description")
        description = "" if description is None or pd.isna(description) else str(description)
        link = row.get("photo_url")
        image = _img(src, pid)
        if link and not pd.isna(link) and str(link).startswith(("http://", "https://")):
            image = f'<a href="{html.escape(str(link))}">{image}</a>'
        cells.append(f'<figure>{image}<figcaption><span class="d">{float(row["distance"]):.4f}</span> '
                     f'<span class="id">{html.escape(pid)}</span><br>{html.escape(description)}</figcaption></figure>')
    body = f'<div class="grid">\n' + "\n".join(cells) + "\n</div>" if cells else "<p>(no results)</p>"
    return _write(path, _page(title, body))


def write_html_pairs(frame: pd.DataFrame, path: str | os.PathLike, image_dir: str | os.PathLike,
                     title: str = "clipsql near-duplicates") -> Path:
    """Write near-duplicate pairs (columns photo_id_a, photo_id_b, distance) side by side.

    Returns:
        The path written.
    """
    cells = []
    for row in frame.to_dict("records"):
        a, b = str(row["photo_id_a"]), str(row["photo_id_b"])
        images = _img(_thumbnail_src(Path(image_dir), a, None), a) + _img(_thumbnail_src(Path(image_dir), b, None), b)
        cells.append(f'<figure><div class="pair">{images}</div><figcaption><span class="d">{float(row["distance"]):.4f}'
                     f'</span> <span class="id">{html.escape(a)} / {html.escape(b)}</span></figcaption></figure>')
    body = f'<div class="grid">\n' + "\n".join(cells) + "\n</div>" if cells else "<p>(no pairs)</p>"
    return _write(path, _page(title, body))
