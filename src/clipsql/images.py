"""Image validation and normalization, shared by the download stage and image queries.

Every image that enters clipsql is decoded in full with Pillow first: truncated files,
zero-byte bodies, HTML pages served as images and decompression bombs become an
:class:`InvalidImage` with a reason, never a crash later in the pipeline. Nothing one
image can hold makes this module raise anything else: any ``Exception`` from Pillow's
open/load, its format plugins, the EXIF orientation or the mode conversion (MemoryError
included) becomes ``InvalidImage('undecodable', '<ExceptionType>: <message>')``;
KeyboardInterrupt and SystemExit are not ``Exception``s and pass through.

Accepted images get their EXIF orientation applied (an EXIF block Pillow cannot apply
leaves the image unrotated, see :func:`_orient`) and are converted to 8-bit RGB by these
rules, per Pillow mode (``v`` is a pixel value; results are rounded to the nearest 8-bit
level; gray modes give R = G = B):

- RGB: unchanged.
- I;16, I;16B, I;16L, I;16N (16-bit gray; Pillow 13 opens a 16-bit gray PNG or TIFF in
  these modes): ``v * 255 / 65535``, not Pillow's clipping ``convert``.
- I (32-bit signed integer; Pillow 13 opens 32-bit integer and signed 16-bit gray TIFFs,
  and older Pillows opened 16-bit PNGs, in this mode): every value within 0..65535 is
  16-bit data, scaled as above; otherwise min-max scaled, ``(v - min) * 255 / (max - min)``
  (a constant image outside 0..65535 is 0 below the range, 255 above it).
- F (32-bit float): every finite value within [0, 1]: ``v * 255``; otherwise min-max over
  the finite values (a constant image: its value clipped to [0, 1], times 255); NaN and
  -inf become 0, +inf 255.
- CMYK: through the embedded ICC profile (``info['icc_profile']``) to sRGB with LittleCMS
  (PIL.ImageCms), perceptual intent; without a profile, or with one that cannot be used
  (corrupt, not CMYK): Pillow's conversion, ``R = (255 - C) * (255 - K) / 255`` etc.
- RGBA, LA, PA, and 1, L, P, RGB, I;16 with a transparency key (PNG tRNS, GIF): composited
  on :data:`BACKGROUND_RGB` (white, as a viewer shows transparency), ``c * a + bg * (1 - a)``
  with ``a`` in 0..1. RGBa and La (premultiplied alpha, e.g. a TIFF with associated
  alpha): ``c + bg * (1 - a)``.
- 1, L, P, RGBX, YCbCr, LAB, HSV and any other mode: Pillow's conversion to RGB.

16 bits per channel RGB (PNG, TIFF), RGBA (PNG) and gray+alpha (PNG) are opened by
Pillow 13 as 8-bit RGB and RGBA holding each value's high byte (``v >> 8``, at most one
level from ``v / 257``), so they need no rule of their own. A 12-bit TIFF (Pillow mode
I;16, values 0..4095) is scaled as 16-bit data, i.e. dark: the file does not say that
its values stop at 4095.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

try:  # LittleCMS; a Pillow built without it converts CMYK without the ICC profile
    from PIL import ImageCms
except ImportError:  # pragma: no cover - the wheels on PyPI all have it
    ImageCms = None  # type: ignore[assignment]

from .errors import ClipsqlError

log = logging.getLogger(__name__)

#: Default pixel limit (width x height). Pillow's own decompression-bomb threshold
#: (PIL.Image.MAX_IMAGE_PIXELS, 89,478,485 pixels = 1024 * 1024 * 1024 // 4 // 3).
DEFAULT_MAX_PIXELS = 89_478_485
#: Formats a photo may arrive in (Pillow's format names): the web's photo formats, plus
#: AVIF where this Pillow decodes it (PIL.features.check('avif'); the PyPI wheels of
#: Pillow >= 11.3 do), as image CDNs (imgix, which serves Unsplash, among them) send it
#: to clients that accept it. Other formats Pillow opens (JPEG 2000, PPM, TGA, PSD, ICO,
#: DDS, PCX, SGI, ...) are not photos a web source serves; refusing them keeps the
#: decoders that see untrusted bytes to the common, well-fuzzed ones. HEIF/HEIC needs a
#: plugin Pillow does not ship; it is refused as 'unsupported_format'.
ACCEPTED_FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"} | ({"AVIF"} if features.check("avif") else set())
)
#: JPEG quality for re-encoded images (those that needed rotation or a mode change).
JPEG_QUALITY = 95
#: Largest width or height a JPEG can hold, pixels (libjpeg's JPEG_MAX_DIMENSION); an
#: image wider or taller cannot be cached as JPEG and is refused as 'too_many_pixels'.
JPEG_MAX_SIDE = 65_500
#: What transparent pixels are composited on, 8-bit sRGB: white, as a browser or an image
#: viewer shows a transparent photo on a page, rather than the black that dropping the
#: alpha channel would give.
BACKGROUND_RGB = (255, 255, 255)

_EXIF_ORIENTATION = 0x0112
#: EXIF orientation (TIFF tag 274, values 1..8) -> the transpose that displays the image upright.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Image metadata that may carry an EXIF orientation (the keys ImageOps.exif_transpose edits).
_ORIENTATION_INFO_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
_GRAY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
#: ISO base media file brands (the 'ftyp' box, ISO/IEC 14496-12) of still-image HEIF files
#: (ISO/IEC 23008-12) and of AVIF (AV1 Image File Format, brands 'avif' and 'avis').
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


class InvalidImage(ClipsqlError):
    """Bytes that are not a usable image; `reason` is a short machine-friendly word."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def open_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Decode `data` and return an 8-bit RGB image with its EXIF orientation applied (the
    conversion rules are in the module docstring).

    With `min_side` (pixels), a JPEG is decoded at reduced size where both sides stay at
    least `min_side`: Pillow's draft mode scales by 1/2, 1/4 or 1/8 inside the DCT, so a
    1080 px photo for a 224 px model decodes at 1/4 the work (bench/embed_precision.py).
    Other formats decode fully.

    Raises:
        InvalidImage: reason 'empty' (zero bytes), 'not_an_image' (HTML, text, unknown
            format), 'unsupported_format' (a format outside ACCEPTED_FORMATS),
            'too_many_pixels' (more than `max_pixels`, checked from the header before
            decoding), or 'undecodable' (truncated, corrupt, or anything else Pillow
            raised, detail '<ExceptionType>: <message>'). Never another exception.
    """
    image, _ = _decode(data, max_pixels, min_side)
    with _undecodable():
        return _to_rgb(_orient(image))


def normalize_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, tuple[int, int]]:
    """Validate `data` and return (JPEG bytes ready for the cache, (width, height) in pixels).

    An RGB JPEG with no EXIF rotation to apply is kept byte for byte (no generation loss);
    any other image is oriented, converted to 8-bit RGB (module docstring) and re-encoded
    as JPEG at quality JPEG_QUALITY (95), without metadata.

    Raises:
        InvalidImage: see :func:`open_rgb`; also 'too_many_pixels' for a side over
            JPEG_MAX_SIDE (65,500) pixels that would need re-encoding.
    """
    image, fmt = _decode(data, max_pixels)
    with _undecodable():
        if fmt in ("JPEG", "MPO") and image.mode == "RGB" and _orientation_transpose(image) is None:
            return data, image.size
        if max(image.size) > JPEG_MAX_SIDE:
            width, height = image.size
            raise InvalidImage(
                "too_many_pixels", f"{width}x{height} pixels: a JPEG holds at most {JPEG_MAX_SIDE} pixels a side"
            )
        rgb = _to_rgb(_orient(image))
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), rgb.size


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextlib.contextmanager
def _undecodable():
    """Turn any Exception but InvalidImage into InvalidImage('undecodable', ...)."""
    try:
        yield
    except InvalidImage:
        raise
    except Exception as exc:  # MemoryError too; KeyboardInterrupt/SystemExit are BaseException
        log.debug("undecodable image", exc_info=True)
        raise InvalidImage("undecodable", _describe(exc)) from None


def _decode(data: bytes, max_pixels: int, min_side: int | None = None) -> tuple[Image.Image, str]:
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
            if min_side and fmt in ("JPEG", "MPO"):
                image.draft(None, (min_side, min_side))  # never below min_side on either side
            image.load()
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage("too_many_pixels", str(exc)) from None
    except Exception as exc:  # MemoryError too; KeyboardInterrupt/SystemExit are BaseException
        log.debug("undecodable image", exc_info=True)
        raise InvalidImage("undecodable", _describe(exc)) from None
    return image, fmt


def _unidentified(data: bytes) -> InvalidImage:
    """The InvalidImage for bytes no Pillow plugin would open."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        return InvalidImage("not_an_image", f"{len(data)} bytes of an HTML page")
    brands = _ftyp_brands(data)
    if brands & _AVIF_BRANDS:
        if "AVIF" in ACCEPTED_FORMATS:  # Pillow reads AVIF, but not this one
            return InvalidImage("undecodable", f"{len(data)} bytes of an AVIF file Pillow cannot open")
        return InvalidImage("unsupported_format", "format AVIF (this Pillow has no AVIF support)")
    if brands & _HEIF_BRANDS:
        return InvalidImage("unsupported_format", "format HEIF/HEIC (Pillow has no HEIF decoder)")
    return InvalidImage("not_an_image", f"{len(data)} bytes of no known image format")


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of an ISO base media file's leading 'ftyp' box (an
    empty set for anything else)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(data[:4], "big"), len(data), 256)
    return {data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)}


def _orientation_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transpose that the image's EXIF orientation asks for; None for orientation 1,
    none, a value outside 2..8, or EXIF that Pillow cannot read (logged at debug)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as exc:
        log.debug("EXIF of a %s image unreadable, orientation not applied: %s", image.format, _describe(exc))
        return None
    return _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _orient(image: Image.Image) -> Image.Image:
    """`image` turned upright by its EXIF orientation.

    ImageOps.exif_transpose does it and rewrites the EXIF without the orientation; some
    broken EXIF blocks (a tag of the wrong type, say) make that rewrite raise. Then the
    readable orientation is applied with a plain transpose and the metadata that held it
    dropped from the copy's info; EXIF Pillow cannot read at all leaves the image
    unrotated. Both are logged at debug and never fail the image.
    """
    method = _orientation_transpose(image)
    if method is None:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        log.debug(
            "ImageOps.exif_transpose failed on a %s image (%s); transposing without it", image.format, _describe(exc)
        )
    try:
        upright = image.transpose(method)
    except Exception as exc:
        log.debug("transpose of a %s image failed (%s); kept unrotated", image.format, _describe(exc))
        return image
    for key in _ORIENTATION_INFO_KEYS:
        upright.info.pop(key, None)
    return upright


def _to_rgb(image: Image.Image) -> Image.Image:
    """`image` in 8-bit RGB by the rules of the module docstring."""
    mode = image.mode
    keyed = "transparency" in image.info
    if mode == "RGB" and not keyed:
        return image
    if mode in _GRAY16_MODES or mode == "I":
        values = np.asarray(image)
        gray = _scale_integer_gray(values, sixteen_bit=mode != "I")
        key = image.info.get("transparency")
        alpha = None if not isinstance(key, int) else np.where(values == key, 0, 255).astype(np.uint8)
        return _gray_rgb(gray, alpha)
    if mode == "F":
        return _gray_rgb(_scale_float_gray(np.asarray(image)), None)
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in ("RGBa", "La"):
        return _composite_premultiplied(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (keyed and mode in ("1", "L", "P", "RGB")):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND_RGB)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _round_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _scale_integer_gray(values: np.ndarray, *, sixteen_bit: bool) -> np.ndarray:
    """Integer gray levels -> 8-bit: 16-bit data (`sixteen_bit`, or every value within
    0..65535) as v * 255 / 65535; other int32 data min-max scaled to 0..255."""
    low, high = (0, 0) if sixteen_bit or values.size == 0 else (int(values.min()), int(values.max()))
    if low >= 0 and high <= 65535:
        # Exact integer rounding of v * 255 / 65535 (= v / 257), in uint32: no overflow.
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if high == low:
        return np.full(values.shape, 0 if high < 0 else 255, np.uint8)
    return _round_u8((values.astype(np.float64) - low) * (255.0 / (high - low)))


def _scale_float_gray(values: np.ndarray) -> np.ndarray:
    """Float gray -> 8-bit: finite values within [0, 1] times 255, otherwise min-max over
    the finite values; NaN and -inf -> 0, +inf -> 255."""
    values = values.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        scaled = values * 255.0
    else:
        low, high = float(finite.min()), float(finite.max())
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif high == low:
            scaled = np.clip(values, 0.0, 1.0) * 255.0
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                scaled = (values - low) * (255.0 / (high - low))
    return _round_u8(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0))


def _gray_rgb(gray: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    image = Image.fromarray(gray, "L")
    if alpha is None:
        return image.convert("RGB")
    background = Image.new("RGB", image.size, BACKGROUND_RGB)
    background.paste(image.convert("RGB"), mask=Image.fromarray(alpha, "L"))
    return background


def _composite_premultiplied(values: np.ndarray) -> Image.Image:
    """RGBa or La pixels (color already multiplied by alpha) over BACKGROUND_RGB:
    c + bg * (255 - a) / 255, in integers."""
    color = values[..., :-1].astype(np.uint16)
    clear = 255 - values[..., -1:].astype(np.uint16)
    background = np.asarray(BACKGROUND_RGB, np.uint16)
    rgb = color + (background * clear + 127) // 255  # (h, w, 1) gray broadcasts to (h, w, 3)
    return Image.fromarray(np.minimum(rgb, 255).astype(np.uint8), "RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK -> sRGB through the embedded ICC profile when LittleCMS can use it (perceptual
    intent, as print-to-screen previews do); otherwise Pillow's conversion. A profile that
    is not CMYK, is corrupt or cannot build a transform is logged at debug and skipped."""
    profile = image.info.get("icc_profile")
    if profile and ImageCms is not None:
        try:
            rgb = ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
            )
            if rgb is not None:
                rgb.info.pop("icc_profile", None)
                return rgb
        except Exception as exc:
            log.debug(
                "ICC profile of a CMYK %s image unusable (%s); Pillow's conversion used", image.format, _describe(exc)
            )
    rgb = image.convert("RGB")
    rgb.info.pop("icc_profile", None)
    return rgb


# --- what an image file says about itself (image-folder sources) ------------------------

#: EXIF tags (the EXIF 2.32 standard, CIPA DC-008): in IFD0 ...
_EXIF_MAKE, _EXIF_MODEL, _EXIF_DATETIME = 0x010F, 0x0110, 0x0132
#: ... in the Exif IFD ...
_EXIF_IFD, _EXIF_DATETIME_ORIGINAL, _EXIF_OFFSET_TIME_ORIGINAL = 0x8769, 0x9003, 0x9011
_EXIF_ISO, _EXIF_FNUMBER, _EXIF_FOCAL_LENGTH, _EXIF_EXPOSURE_TIME = 0x8827, 0x829D, 0x920A, 0x829A
#: ... and in the GPS IFD: latitude/longitude refs ('N'/'S', 'E'/'W') and (deg, min, sec) rationals.
_GPS_IFD, _GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 0x8825, 1, 2, 3, 4
#: Dates taken outside these years are left out (the range ClickHouse's DateTime64 holds).
MIN_TAKEN_YEAR, MAX_TAKEN_YEAR = 1900, 2299
#: Longest camera make or model kept, characters (EXIF ASCII fields may run to 64 KB).
MAX_EXIF_TEXT_CHARS = 200
#: Orientations that swap width and height (EXIF orientation 5..8: turned a quarter).
_QUARTER_TURNS = (5, 6, 7, 8)


def photo_metadata(path) -> dict:
    """What an image file says about itself, in the photos columns the Unsplash release fills:
    photo_width, photo_height (pixels, as shown: after the EXIF orientation),
    photo_aspect_ratio (width / height), photo_submitted_at (when it was taken: EXIF
    DateTimeOriginal, else DateTime; UTC when the file gives its offset, else the local time
    taken as UTC), exif_camera_make, exif_camera_model, exif_iso, exif_aperture_value
    (f-number), exif_focal_length (mm), exif_exposure_time (text, e.g. '1/250'),
    photo_location_latitude and photo_location_longitude (decimal degrees).

    Reads the header only (Pillow opens lazily). Anything unreadable is left out: never raises.
    """
    out: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                exif = image.getexif()
                orientation = exif.get(_EXIF_ORIENTATION, 1)
                if orientation in _QUARTER_TURNS:
                    width, height = height, width
                if width > 0 and height > 0:
                    out.update(photo_width=width, photo_height=height, photo_aspect_ratio=width / height)
                details = _sub_ifd(exif, _EXIF_IFD)
                gps = _sub_ifd(exif, _GPS_IFD)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is the download stage's to record
        log.debug("no metadata read from %s: %s", path, _describe(exc))
        return out
    try:
        _exif_columns(exif, details, gps, out)
    except Exception as exc:  # noqa: BLE001 - EXIF of a kind not foreseen: what was read so far
        log.debug("EXIF of %s partly unreadable: %s", path, _describe(exc))
    return out


def _exif_columns(exif, details: dict[int, Any], gps: dict[int, Any], out: dict) -> None:
    """Fill `out` with the EXIF columns of :func:`photo_metadata` that read cleanly."""
    import datetime as dt

    for column, value in (("exif_camera_make", exif.get(_EXIF_MAKE)), ("exif_camera_model", exif.get(_EXIF_MODEL))):
        text = _text(value)[:MAX_EXIF_TEXT_CHARS]
        if text:
            out[column] = text
    taken = _text(details.get(_EXIF_DATETIME_ORIGINAL)) or _text(exif.get(_EXIF_DATETIME))
    if taken:
        with contextlib.suppress(ValueError):
            moment = dt.datetime.strptime(taken[:19], "%Y:%m:%d %H:%M:%S")
            offset = _text(details.get(_EXIF_OFFSET_TIME_ORIGINAL))
            zone = dt.timezone.utc
            if offset and len(offset) == 6 and offset[0] in "+-":
                sign = 1 if offset[0] == "+" else -1
                zone = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
            taken_at = moment.replace(tzinfo=zone).astimezone(dt.timezone.utc)
            # ClickHouse's DateTime64 holds 1900..2299 (its docs, "DateTime64"); a date outside is a
            # broken clock or a forged file, and would fail the load of the photo's whole batch.
            if MIN_TAKEN_YEAR <= taken_at.year <= MAX_TAKEN_YEAR:
                out["photo_submitted_at"] = taken_at
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError, OverflowError):
        iso: Any = details.get(_EXIF_ISO)
        iso = iso[0] if isinstance(iso, tuple) and iso else iso
        if iso is not None and 0 < int(iso) < 10**7:
            out["exif_iso"] = int(iso)
    for column, tag in (("exif_aperture_value", _EXIF_FNUMBER), ("exif_focal_length", _EXIF_FOCAL_LENGTH)):
        with contextlib.suppress(TypeError, ValueError, ZeroDivisionError, OverflowError):
            value = float(details[tag]) if tag in details else 0.0
            if 0 < value < 1e5:
                out[column] = round(value, 3)
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError, OverflowError):
        exposure = details.get(_EXIF_EXPOSURE_TIME)
        if exposure is not None and float(exposure) > 0:
            numerator, denominator = getattr(exposure, "numerator", None), getattr(exposure, "denominator", None)
            out["exif_exposure_time"] = (
                f"{numerator}/{denominator}" if numerator == 1 and denominator else f"{float(exposure):g}"
            )
    for column, ref_tag, tag, negative in (
        ("photo_location_latitude", _GPS_LAT_REF, _GPS_LAT, "S"),
        ("photo_location_longitude", _GPS_LON_REF, _GPS_LON, "W"),
    ):
        if tag not in gps:
            continue
        with contextlib.suppress(TypeError, ValueError, ZeroDivisionError, OverflowError, IndexError):
            degrees, minutes, seconds = (float(x) for x in gps[tag])
            value = degrees + minutes / 60 + seconds / 3600
            value = -value if _text(gps.get(ref_tag)).upper().startswith(negative) else value
            if abs(value) <= (90 if column.endswith("latitude") else 180):
                out[column] = round(value, 7)


def _sub_ifd(exif, tag: int) -> dict:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:  # noqa: BLE001 - a broken IFD: nothing from it
        return {}


def _text(value) -> str:
    """An EXIF ASCII value as clean text ('' for none): NULs and padding stripped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""
