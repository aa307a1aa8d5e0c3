"""Image validation and normalization, shared by the download stage and image queries.

Every image that enters clipsql is decoded in full with Pillow first: truncated files,
zero-byte bodies, HTML pages served as images and decompression bombs become an
:class:`InvalidImage` with a reason, never a crash later in the pipeline. Accepted images
get their EXIF orientation applied and are converted to RGB.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ClipsqlError

#: Default pixel limit (width x height). Pillow's own decompression-bomb threshold
#: (PIL.Image.MAX_IMAGE_PIXELS, 89,478,485 pixels = 1024 * 1024 * 1024 // 4 // 3).
DEFAULT_MAX_PIXELS = 89_478_485
#: Formats a photo may arrive in.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
#: JPEG quality for re-encoded images (those that needed rotation or a mode change).
JPEG_QUALITY = 95
_EXIF_ORIENTATION = 0x0112


class InvalidImage(ClipsqlError):
    """Bytes that are not a usable image; `reason` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def open_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` fully and return an RGB image with its EXIF orientation applied.

    Raises:
        InvalidImage: reason 'empty' (zero bytes), 'not_an_image' (HTML, text, unknown
            format), 'unsupported_format', 'too_many_pixels' (more than `max_pixels`,
            checked from the header before decoding), or 'undecodable' (truncated or corrupt).
    """
    image, _ = _decode(data, max_pixels)
    return _to_rgb(image)


def normalize_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, tuple[int, int]]:
    """Validate `data` and return (JPEG bytes ready for the cache, (width, height) in pixels).

    An RGB JPEG with no EXIF rotation is kept byte for byte (no generation loss); any other
    image is oriented, converted to RGB and re-encoded as JPEG at quality 95.

    Raises:
        InvalidImage: see :func:`open_rgb`.
    """
    image, fmt = _decode(data, max_pixels)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if fmt in ("JPEG", "MPO") and image.mode == "RGB" and orientation == 1:
        return data, image.size
    rgb = _to_rgb(image)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), rgb.size


def _decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    if not data:
        raise InvalidImage("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "?"
            if fmt not in ACCEPTED_FORMATS:
                raise InvalidImage("unsupported_format", f"format {fmt}")
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage("too_many_pixels", f"{width}x{height} pixels is over the limit of {max_pixels}")
            image.load()
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        looks = "an HTML page" if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")) else "no known image format"
        raise InvalidImage("not_an_image", f"{len(data)} bytes of {looks}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage("undecodable", str(exc) or type(exc).__name__) from None
    return image, fmt


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as a viewer shows them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
