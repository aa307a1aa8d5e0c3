"""Image inputs of a search: an image from a path, URL, bytes or PIL image
(:func:`load_image`), and the box of a crop query (:func:`parse_box`, :func:`crop_box`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import BadArgument, NotFound
from ..images import DEFAULT_MAX_PIXELS, InvalidImage, open_rgb
from .checks import check_float, check_text

#: Largest image file read for a query, bytes.
MAX_IMAGE_BYTES = 25 * 1024 * 1024


def load_image(source, *, max_pixels: int = DEFAULT_MAX_PIXELS):
    """An RGB PIL image from a file path, an http(s) URL, raw bytes or a PIL image.

    URLs are fetched with the download stage's session (timeouts, retries, byte limit).

    Raises:
        NotFound: a local file that does not exist.
        BadArgument: bytes that are not a usable image, or a URL that cannot be fetched.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "image bytes"
    else:
        text = os.fspath(source) if isinstance(source, os.PathLike) else source
        if not isinstance(text, str):
            raise BadArgument(f"an image must be a path, URL, bytes or PIL image, got {type(source).__name__}")
        check_text("image", text, allow_empty=False)
        label = text
        if text.startswith(("http://", "https://")):
            data = _fetch_image(text)
        else:
            path = Path(text)
            try:
                if not path.is_file():
                    raise NotFound(f"image file {text[:200]!r} does not exist")
                if path.stat().st_size > MAX_IMAGE_BYTES:
                    raise BadArgument(f"image file {text[:200]!r} is over the limit of {MAX_IMAGE_BYTES} bytes")
                data = path.read_bytes()
            except OSError as exc:  # e.g. a name too long for the file system, no permission
                raise NotFound(f"cannot read image file {text[:200]!r}: {exc.strerror or exc}") from None
    try:
        return open_rgb(data, max_pixels=max_pixels)
    except InvalidImage as exc:
        raise BadArgument(f"{label[:200]}: not a usable image ({exc})") from None


def _fetch_image(url: str) -> bytes:
    # Deferred: the download stage (requests, its session) is loaded only for a URL query.
    from ..download import DownloadOptions, download_photos

    options = DownloadOptions(
        workers=1, width=0, retries=2, read_timeout_s=15.0, total_timeout_s=60.0, max_bytes=MAX_IMAGE_BYTES
    )
    with tempfile.TemporaryDirectory(prefix="clipsql-query-") as folder:
        result = download_photos([("query", url)], folder, options, progress=False)[0]
        if not result.ok or result.path is None:
            raise BadArgument(f"cannot fetch image {url[:200]}: {result.reason}: {result.detail}")
        return Path(result.path).read_bytes()


def crop_box(size: tuple[int, int], box: Sequence[float]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of `box` in an image of `size` (width, height).

    `box` is (left, top, right, bottom): fractions of the width and height when every value
    is within 0..1, else pixels.

    Raises:
        BadArgument: not 4 finite numbers, an empty box, or one outside the image.
    """
    if isinstance(box, str) or len(box) != 4:
        raise BadArgument(f"box must be 4 numbers (left, top, right, bottom), got {box!r}")
    values = [check_float("box value", v, -1e9, 1e9) for v in box]
    width, height = size
    if all(0.0 <= v <= 1.0 for v in values):
        values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
    left, top, right, bottom = (int(round(v)) for v in values)
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise BadArgument(
            f"box {tuple(box)} is empty or outside the {width}x{height} image "
            f"(pixels ({left}, {top}, {right}, {bottom}))"
        )
    return left, top, right, bottom


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'left,top,right,bottom' -> 4 floats (the CLI's --box).

    Raises:
        BadArgument: not 4 comma-separated numbers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise BadArgument(f"box must be 'left,top,right,bottom' (pixels, or fractions 0..1), got {text!r}")
    return values  # type: ignore[return-value]
