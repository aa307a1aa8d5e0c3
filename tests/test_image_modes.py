"""Every image mode Pillow opens becomes faithful 8-bit RGB, and no image raises anything
but InvalidImage (clipsql.images).

Each source is built with numpy (gradients and random values spanning a realistic range),
saved in a format that holds its mode, run through normalize_image_bytes (and open_rgb),
and the per-channel means of the 8-bit RGB result are compared with the source's, scaled
to 0..255 by the rule the module documents (for transparency: the composite on
BACKGROUND_RGB), within 2 % of 255.
"""

from __future__ import annotations

import colorsys
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin, features

from clipsql.images import BACKGROUND_RGB, InvalidImage, _to_rgb, normalize_image_bytes, open_rgb

TOLERANCE = 0.02 * 255
SIZE = (48, 40)  # width, height
H, W = SIZE[1], SIZE[0]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def saved(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def gray16(seed: int = 0) -> np.ndarray:
    """16-bit gray over the whole 0..65535 range, mean near 1/3 of it (u**2, u uniform)."""
    u = np.clip(np.linspace(0, 1, H * W).reshape(H, W) + rng(seed).normal(0, 0.05, (H, W)), 0, 1)
    values = np.round(65535 * u**2).astype(np.uint16)
    values.flat[:2] = (0, 65535)
    return values


def rgb_gradient(seed: int = 0) -> np.ndarray:
    """Smooth color (0..1 floats, h x w x 3) with mild noise: JPEG keeps its means."""
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x / (W - 1), y / (H - 1), 1 - x / (W - 1) * 0.7], axis=-1)
    return np.clip(base + rng(seed).normal(0, 0.03, base.shape), 0, 1)


def composite(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight color (0..255, h x w x c) over BACKGROUND_RGB with alpha in 0..1."""
    a = alpha[..., None]
    return color * a + np.asarray(BACKGROUND_RGB, float) * (1 - a)


def channel_means(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, float)
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=-1)
    return values.reshape(-1, 3).mean(axis=0)


def png(values: np.ndarray, color_type: int, bit_depth: int, trns: bytes | None = None) -> bytes:
    """A PNG written by hand (Pillow cannot save 16-bit RGB, RGBA or gray+alpha)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = values.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = values.astype(dtype).reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if trns is not None:
        body += chunk(b"tRNS", trns)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiff(
    values: np.ndarray, photometric: int, bits: int, *, extra_samples: tuple[int, ...] = (), signed: bool = False
) -> bytes:
    """A little-endian, uncompressed, one-strip TIFF written by hand (Pillow cannot save
    16-bit RGB, signed 16-bit gray or associated-alpha gray)."""
    height, width = values.shape[:2]
    samples = 1 if values.ndim == 2 else values.shape[2]
    dtype = ("<i2" if signed else "<u2") if bits == 16 else "u1"
    data = values.astype(dtype).tobytes()
    # (tag, SHORT or LONG, values); the strip offset (273) is filled in below.
    entries = [
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [bits] * samples),
        (259, 3, [1]),
        (262, 3, [photometric]),
        (273, 4, [0]),
        (277, 3, [samples]),
        (278, 4, [height]),
        (279, 4, [len(data)]),
        (284, 3, [1]),
    ]
    if extra_samples:
        entries.append((338, 3, list(extra_samples)))
    if signed:
        entries.append((339, 3, [2] * samples))  # SampleFormat 2: signed integer
    extra_at = 8 + 2 + 12 * len(entries) + 4
    extra, fields = b"", []
    for tag, kind, items in entries:
        blob = struct.pack(f"<{len(items)}{'I' if kind == 4 else 'H'}", *items)
        if len(blob) > 4:
            fields.append([tag, kind, len(items), struct.pack("<I", extra_at + len(extra))])
            extra += blob
        else:
            fields.append([tag, kind, len(items), blob.ljust(4, b"\0")])
    data_at = extra_at + len(extra)
    ifd = struct.pack("<H", len(fields))
    for tag, kind, count, field in fields:
        if tag == 273:
            field = struct.pack("<I", data_at)
        ifd += struct.pack("<HHI", tag, kind, count) + field
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra + data


# --- sources: name -> () -> (bytes, expected per-channel means in 0..255) ------------------


def gray16_png():
    v = gray16()
    return saved(Image.fromarray(v), "PNG"), channel_means(v * (255 / 65535))


def gray16_little_endian_tiff():
    v = gray16(1)
    return saved(Image.frombytes("I;16L", SIZE, v.astype("<u2").tobytes()), "TIFF"), channel_means(v * (255 / 65535))


def gray16_big_endian_tiff():
    v = gray16(2)
    image = Image.frombytes("I;16B", SIZE, v.astype(">u2").tobytes())
    return saved(image, "TIFF"), channel_means(v * (255 / 65535))


def int32_16bit_range_tiff():
    v = gray16(3).astype(np.int32)  # 32-bit container, 16-bit data: v / 257
    return saved(Image.fromarray(v), "TIFF"), channel_means(v * (255 / 65535))


def int32_wide_range_tiff():
    u = gray16(4) / 65535
    v = np.round(-2_000_000 + u * 7_000_000).astype(np.int32)  # min-max scaled
    return saved(Image.fromarray(v), "TIFF"), channel_means((v - v.min()) * 255 / (v.max() - v.min()))


def int16_signed_tiff():
    # A signed 16-bit gray TIFF, which Pillow 13 opens as mode I: negative values -> min-max.
    v = gray16(5).astype(np.int32) - 32768
    return tiff(v, 1, 16, signed=True), channel_means((v - v.min()) * 255 / (v.max() - v.min()))


def float_unit_tiff():
    v = (gray16(6) / 65535).astype(np.float32)  # within [0, 1]: times 255
    return saved(Image.fromarray(v), "TIFF"), channel_means(v * 255.0)


def float_wide_range_tiff():
    v = (gray16(7) / 65535 * 4000 - 500).astype(np.float32)  # HDR-like: min-max scaled
    return saved(Image.fromarray(v), "TIFF"), channel_means((v - v.min()) * 255 / (v.max() - v.min()))


def float_non_finite_tiff():
    v = (gray16(8) / 65535 * 3).astype(np.float32)
    v[::7, ::5] = np.nan
    v[1::9, ::4] = np.inf
    v[2::11, ::3] = -np.inf
    finite = v[np.isfinite(v)]
    scaled = (v - finite.min()) * 255 / (finite.max() - finite.min())
    scaled = np.where(np.isnan(v), 0, np.where(v == np.inf, 255, np.where(v == -np.inf, 0, scaled)))
    return saved(Image.fromarray(v), "TIFF"), channel_means(scaled)


def _cmyk_source(seed: int) -> np.ndarray:
    g = rgb_gradient(seed)
    k = np.clip(0.15 + 0.4 * g[..., 1:2] + rng(seed).normal(0, 0.03, g[..., :1].shape), 0, 1)
    return np.round(np.concatenate([1 - g, k], axis=-1) * 255).astype(np.uint8)


def _naive_cmyk(cmyk: np.ndarray) -> np.ndarray:
    c = cmyk.astype(float)
    return (255 - c[..., :3]) * (255 - c[..., 3:]) / 255


def cmyk_jpeg():
    cmyk = _cmyk_source(9)
    return saved(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95), channel_means(_naive_cmyk(cmyk))


def cmyk_jpeg_garbage_profile():
    cmyk = _cmyk_source(10)
    data = saved(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95, icc_profile=b"not an ICC profile" * 9)
    return data, channel_means(_naive_cmyk(cmyk))


def cmyk_jpeg_rgb_profile():
    cmyk = _cmyk_source(11)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # an RGB profile on CMYK data
    data = saved(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95, icc_profile=srgb)
    return data, channel_means(_naive_cmyk(cmyk))


def cmyk_ignoring_black_profile(grid: int = 9) -> bytes:
    """An ICC v2 CMYK input profile (A2B0 lut16, PCS Lab) that maps (c, m, y, k) to the
    sRGB color (1 - c, 1 - m, 1 - y): it ignores the black ink, so its result is far from
    Pillow's own CMYK conversion. Lab values come from LittleCMS's sRGB -> Lab (D50)."""
    axis = np.linspace(0, 1, grid)
    c, m, y, _k = np.meshgrid(axis, axis, axis, axis, indexing="ij")  # first channel slowest
    rgb = np.round(np.stack([1 - c, 1 - m, 1 - y], axis=-1).reshape(1, -1, 3) * 255).astype(np.uint8)
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    raw = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), to_lab)).reshape(-1, 3)
    # Pillow stores LAB as L 0..255 and a, b as signed bytes; ICC v2 16-bit Lab is
    # L * 0xFF00 / 100 and (a + 128) * 256, i.e. 256 times the offset-128 bytes.
    lab = np.concatenate([raw[:, :1].astype(np.int32), raw[:, 1:].view(np.int8).astype(np.int32) + 128], axis=1)
    clut = (lab * 256).astype(">u2").tobytes()
    identity = struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536)
    ramp = struct.pack(">2H", 0, 65535)
    a2b0 = (
        b"mft2"
        + b"\0" * 4
        + struct.pack(">BBBB", 4, 3, grid, 0)
        + identity
        + struct.pack(">HH", 2, 2)
        + ramp * 4
        + clut
        + ramp * 3
    )
    text = b"CMYK that ignores black, for tests\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    d50 = struct.pack(">3i", *(round(v * 65536) for v in (0.9642, 1.0, 0.8249)))
    wtpt = b"XYZ " + b"\0" * 4 + d50
    cprt = b"text" + b"\0" * 4 + b"no copyright\0"
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, blob in tags:
        blob = blob + b"\0" * (-len(blob) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(blob))
        body += blob
    size = 128 + len(table) + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"scnr"
        + b"CMYK"
        + b"Lab "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + d50
        + b"\0" * 4
    )
    header = header.ljust(128, b"\0")
    return header + table + body


def cmyk_jpeg_with_profile():
    cmyk = _cmyk_source(12)
    data = saved(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95, icc_profile=cmyk_ignoring_black_profile())
    return data, channel_means(255 - cmyk[..., :3].astype(float))


def rgba_png():
    color, alpha = rgb_gradient(13) * 255, rgb_gradient(14)[..., 0]
    values = np.concatenate([color, alpha[..., None] * 255], axis=-1).round().astype(np.uint8)
    return saved(Image.fromarray(values, "RGBA"), "PNG"), channel_means(
        composite(values[..., :3].astype(float), values[..., 3] / 255)
    )


def rgba16_png():
    # 16 bits per channel: Pillow 13 opens it as 8-bit RGBA (high bytes).
    color, alpha = rgb_gradient(15), rgb_gradient(16)[..., 2]
    values = np.round(np.concatenate([color, alpha[..., None]], axis=-1) * 65535).astype(np.uint16)
    return png(values, 6, 16), channel_means(composite(color * 255, alpha))


def la_png():
    v = np.round(gray16(17) / 257).astype(np.uint8)
    alpha = np.round(rgb_gradient(18)[..., 1] * 255).astype(np.uint8)
    image = Image.fromarray(np.stack([v, alpha], axis=-1), "LA")
    return saved(image, "PNG"), channel_means(composite(v[..., None].astype(float), alpha / 255))


def gray16_alpha_png():
    # 16-bit gray + 16-bit alpha: Pillow 13 has no such mode and opens it as RGBA (high bytes).
    v, alpha = gray16(19), rgb_gradient(20)[..., 0]
    values = np.stack([v, np.round(alpha * 65535).astype(np.uint16)], axis=-1)
    return png(values, 4, 16), channel_means(composite(v[..., None] * (255 / 65535), alpha))


def la_premultiplied_tiff():
    # ExtraSamples = 1 (associated alpha): Pillow opens mode La, gray already times alpha.
    v = np.round(gray16(21) / 257)
    alpha = np.round(rgb_gradient(22)[..., 1] * 255)
    premultiplied = np.round(v * alpha / 255)
    data = tiff(np.stack([premultiplied, alpha], axis=-1), 1, 8, extra_samples=(1,))
    return data, channel_means(composite(v[..., None], alpha / 255))


def palette_with_alpha_png():
    indices = np.round(gray16(23) / 257).astype(np.uint8)
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette([c for i in range(256) for c in (i, 255 - i, i // 2)])
    alpha = bytes(int(a) for a in np.linspace(0, 255, 256))  # per-index alpha (tRNS)
    palette = np.asarray([(i, 255 - i, i // 2) for i in range(256)], float)
    expected = composite(palette[indices], np.frombuffer(alpha, np.uint8)[indices] / 255)
    return saved(image, "PNG", transparency=alpha), channel_means(expected)


def gray_keyed_png():
    v = np.round(gray16(24) / 257).astype(np.uint8)
    v[::3, ::2] = 7  # the tRNS key: those pixels are transparent
    expected = np.where(v == 7, 255, v).astype(float)
    return saved(Image.fromarray(v, "L"), "PNG", transparency=7), channel_means(expected)


def gray16_keyed_png():
    v = gray16(25)
    v[::3, ::2] = 1234  # the 16-bit tRNS key
    expected = np.where(v == 1234, 255, v * (255 / 65535))
    return png(v, 0, 16, trns=struct.pack(">H", 1234)), channel_means(expected)


def rgb_keyed_png():
    values = np.round(rgb_gradient(26) * 255).astype(np.uint8)
    y, x = np.mgrid[0:H, 0:W]
    values[(y // 8 + x // 8) % 3 == 0] = (0, 0, 0)  # 8 x 8 blocks: JPEG keeps the means of sharp edges
    expected = np.where((values == 0).all(axis=-1, keepdims=True), 255, values).astype(float)
    return saved(Image.fromarray(values, "RGB"), "PNG", transparency=(0, 0, 0)), channel_means(expected)


def bilevel_png():
    bits = rng(27).random((H, W)) < np.linspace(0.1, 0.6, W)
    return saved(Image.fromarray(bits), "PNG"), channel_means(bits * 255.0)


def palette_gif():
    indices = np.round(gray16(28) / 257).astype(np.uint8)
    image = Image.fromarray(indices, "L").convert("P")
    palette = [(i, (i * 3) % 256, 255 - i) for i in range(256)]
    image.putpalette([c for rgb in palette for c in rgb])
    return saved(image, "GIF"), channel_means(np.asarray(palette, float)[indices])


def ycbcr_tiff():
    rgb = np.round(rgb_gradient(29) * 255).astype(np.uint8)
    ycc = np.asarray(Image.fromarray(rgb, "RGB").convert("YCbCr"))
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    # ITU-R BT.601 full range (JFIF), the inverse of Pillow's RGB -> YCbCr.
    expected = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], axis=-1
    )
    return saved(Image.fromarray(ycc, "YCbCr"), "TIFF"), channel_means(np.clip(expected, 0, 255))


def lab_tiff():
    rgb = np.round(rgb_gradient(30) * 255).astype(np.uint8)
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), to_lab)
    return saved(lab, "TIFF"), channel_means(rgb)


def rgb16_tiff():
    color = rgb_gradient(31)
    return tiff(np.round(color * 65535), 2, 16), channel_means(color * 255)


def rgb16_png():
    color = rgb_gradient(32)
    return png(np.round(color * 65535), 2, 16), channel_means(color * 255)


SOURCES = {
    f.__name__: f
    for f in (
        gray16_png,
        gray16_little_endian_tiff,
        gray16_big_endian_tiff,
        int32_16bit_range_tiff,
        int32_wide_range_tiff,
        int16_signed_tiff,
        float_unit_tiff,
        float_wide_range_tiff,
        float_non_finite_tiff,
        cmyk_jpeg,
        cmyk_jpeg_garbage_profile,
        cmyk_jpeg_rgb_profile,
        cmyk_jpeg_with_profile,
        rgba_png,
        rgba16_png,
        la_png,
        gray16_alpha_png,
        la_premultiplied_tiff,
        palette_with_alpha_png,
        gray_keyed_png,
        gray16_keyed_png,
        rgb_keyed_png,
        bilevel_png,
        palette_gif,
        ycbcr_tiff,
        lab_tiff,
        rgb16_tiff,
        rgb16_png,
    )
}
#: The Pillow mode each source must open in, so a test checks the path it names.
OPENS_AS = {
    "gray16_png": "I;16",
    "gray16_little_endian_tiff": "I;16",
    "gray16_big_endian_tiff": "I;16B",
    "int32_16bit_range_tiff": "I",
    "int32_wide_range_tiff": "I",
    "int16_signed_tiff": "I",
    "float_unit_tiff": "F",
    "float_wide_range_tiff": "F",
    "float_non_finite_tiff": "F",
    "cmyk_jpeg": "CMYK",
    "cmyk_jpeg_garbage_profile": "CMYK",
    "cmyk_jpeg_rgb_profile": "CMYK",
    "cmyk_jpeg_with_profile": "CMYK",
    "rgba_png": "RGBA",
    "rgba16_png": "RGBA",
    "la_png": "LA",
    "gray16_alpha_png": "RGBA",
    "la_premultiplied_tiff": "La",
    "palette_with_alpha_png": "P",
    "gray_keyed_png": "L",
    "gray16_keyed_png": "I;16",
    "rgb_keyed_png": "RGB",
    "bilevel_png": "1",
    "palette_gif": "P",
    "ycbcr_tiff": "YCbCr",
    "lab_tiff": "LAB",
    "rgb16_tiff": "RGB",
    "rgb16_png": "RGB",
}


def assert_means(image: Image.Image, expected: np.ndarray) -> None:
    assert image.mode == "RGB"
    got = channel_means(np.asarray(image))
    assert np.abs(got - expected).max() <= TOLERANCE, f"RGB means {got.round(1)}, expected {expected.round(1)}"


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_mode_normalizes_to_faithful_rgb(name):
    data, expected = SOURCES[name]()
    with Image.open(io.BytesIO(data)) as source:
        assert source.mode == OPENS_AS[name]
    jpeg, size = normalize_image_bytes(data)
    with Image.open(io.BytesIO(jpeg)) as result:
        assert result.format == "JPEG" and result.size == size == SIZE
        assert_means(result, expected)


@pytest.mark.parametrize("name", list(SOURCES))
def test_open_rgb_gives_faithful_rgb_for_every_mode(name):
    data, expected = SOURCES[name]()
    image = open_rgb(data)
    assert image.size == SIZE
    assert_means(image, expected)


def test_the_embedded_cmyk_profile_is_used_not_pillows_conversion():
    data, expected = cmyk_jpeg_with_profile()
    with Image.open(io.BytesIO(data)) as source:
        naive = channel_means(np.asarray(source.convert("RGB")))
    assert np.abs(naive - expected).max() > 5 * TOLERANCE  # the profile matters
    assert_means(open_rgb(data), expected)


def test_modes_no_file_format_holds():
    """I;16N, RGBa, PA and HSV exist in Pillow but no format here saves them: _to_rgb directly."""
    v = gray16(40)
    image = _to_rgb(Image.frombytes("I;16N", SIZE, v.astype("=u2").tobytes()))
    assert_means(image, channel_means(v * (255 / 65535)))

    color, alpha = rgb_gradient(41) * 255, rgb_gradient(42)[..., 2]
    premultiplied = np.round(np.concatenate([color * alpha[..., None], alpha[..., None] * 255], axis=-1))
    image = _to_rgb(Image.frombytes("RGBa", SIZE, premultiplied.astype(np.uint8).tobytes()))
    assert_means(image, channel_means(composite(color, alpha)))

    indices = np.round(gray16(43) / 257).astype(np.uint8)
    alpha = np.round(rgb_gradient(44)[..., 0] * 255).astype(np.uint8)
    pa = Image.frombytes("PA", SIZE, np.stack([indices, alpha], axis=-1).tobytes())
    pa.putpalette([c for i in range(256) for c in (255 - i, i, i)])
    palette = np.asarray([(255 - i, i, i) for i in range(256)], float)
    assert_means(_to_rgb(pa), channel_means(composite(palette[indices], alpha / 255)))

    hsv = np.round(rgb_gradient(45) * 255).astype(np.uint8)
    expected = np.asarray([colorsys.hsv_to_rgb(*(p / 255)) for p in hsv.reshape(-1, 3)]).reshape(H, W, 3) * 255
    assert_means(_to_rgb(Image.fromarray(hsv, "HSV")), channel_means(expected))


def test_constant_and_all_non_finite_float_images_do_not_crash():
    for values, level in [
        (np.full((H, W), 7.5, np.float32), 255),
        (np.full((H, W), -3, np.float32), 0),
        (np.full((H, W), np.nan, np.float32), 0),
        (np.full((H, W), np.inf, np.float32), 255),
    ]:
        image = open_rgb(saved(Image.fromarray(values), "TIFF"))
        assert np.asarray(image).min() == np.asarray(image).max() == level
    for values, level in [(np.full((H, W), -70_000, np.int32), 0), (np.full((H, W), 70_000, np.int32), 255)]:
        assert np.asarray(open_rgb(saved(Image.fromarray(values), "TIFF"))).max() == level


# --- nothing but InvalidImage ---------------------------------------------------------------


def avif_bytes() -> bytes:
    return saved(Image.fromarray(np.round(rgb_gradient(50) * 255).astype(np.uint8), "RGB"), "AVIF", quality=80)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_is_accepted():
    data = avif_bytes()
    jpeg, size = normalize_image_bytes(data)
    assert size == SIZE
    with Image.open(io.BytesIO(jpeg)) as result:
        assert_means(result, channel_means(rgb_gradient(50) * 255))
    assert open_rgb(data).mode == "RGB"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_corrupt_avif_is_invalid_image_never_another_exception():
    data = avif_bytes()
    payload = data.index(b"mdat") + 4
    broken = {
        "truncated": data[: len(data) // 2],
        "truncated early": data[:200],
        # Flipped bits at the start of the AV1 payload: libavif raises RuntimeError in Pillow 13.
        "flipped payload": data[:payload]
        + bytes(b ^ 0xFF for b in data[payload : payload + 16])
        + data[payload + 16 :],
    }
    for name, bad in broken.items():
        for call in (normalize_image_bytes, open_rgb):
            with pytest.raises(InvalidImage) as info:
                call(bad)
            assert info.value.reason == "undecodable", (name, info.value)
    # Bits flipped anywhere else: the image decodes (AV1 is tolerant) or is undecodable.
    middle = len(data) // 2
    for start in range(middle - 64, middle + 64, 8):
        bad = data[:start] + bytes(b ^ 0xFF for b in data[start : start + 8]) + data[start + 8 :]
        try:
            normalize_image_bytes(bad)
        except InvalidImage as exc:
            assert exc.reason == "undecodable"


def test_heif_is_unsupported_not_a_mystery():
    heic = struct.pack(">I", 24) + b"ftypheic" + struct.pack(">I", 0) + b"mif1heic" + b"\0" * 100
    with pytest.raises(InvalidImage) as info:
        normalize_image_bytes(heic)
    assert info.value.reason == "unsupported_format" and "HEIF" in info.value.detail


def _jpeg_with_exif(ifd_entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """An RGB JPEG (80 x 40) whose APP1 holds a hand-made little-endian EXIF IFD."""
    ifd = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(ifd_entries))
    for tag, kind, count, value in ifd_entries:
        ifd += struct.pack("<HHI", tag, kind, count) + value
    payload = b"Exif\0\0" + ifd + struct.pack("<I", 0) + b"\0" * 32
    jpeg = saved(Image.new("RGB", (80, 40), (200, 10, 10)), "JPEG")
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


ROTATE_90 = (0x0112, 3, 1, struct.pack("<HH", 6, 0))  # orientation 6: turn 90 degrees to display


@pytest.mark.parametrize(
    "entry",
    [
        (0x0102, 2, 4, b"abc\0"),  # BitsPerSample as ASCII: Pillow's EXIF rewrite raises struct.error
        (0x010F, 11, 1, b"\xf2\x90\x9c\x9a"),  # Make as a FLOAT: AttributeError in the rewrite
        (0x0142, 6, 4, b"\x95\x97\xa7\x5e"),  # TileWidth as SBYTEs: struct.error in the rewrite
    ],
    ids=["ascii-bits", "float-make", "sbyte-tilewidth"],
)
def test_jpeg_with_a_broken_exif_block_still_normalizes(entry):
    data = _jpeg_with_exif(sorted([ROTATE_90, entry]))
    jpeg, size = normalize_image_bytes(data)
    assert size == (40, 80)  # the readable orientation is still applied
    with Image.open(io.BytesIO(jpeg)) as result:
        assert result.size == (40, 80) and result.mode == "RGB"
    image = open_rgb(data)
    assert image.mode == "RGB" and image.size == (40, 80)


@pytest.mark.parametrize(
    "entry",
    [
        (0x0112, 3, 0x7FFFFFFF, struct.pack("<HH", 6, 0)),  # count past the end: tag skipped
        (0x0112, 2, 4, b"six\0"),  # orientation as text
        (0x0112, 3, 1, struct.pack("<HH", 99, 0)),  # orientation out of 1..8
    ],
    ids=["huge-count", "text", "out-of-range"],
)
def test_jpeg_with_a_garbage_orientation_keeps_its_bytes_unrotated(entry):
    data = _jpeg_with_exif([entry])
    jpeg, size = normalize_image_bytes(data)
    assert jpeg == data and size == (80, 40)  # nothing to apply: the fast path keeps the bytes
    assert open_rgb(data).size == (80, 40)


def test_an_image_too_wide_for_jpeg_is_refused_not_a_crash():
    wide = saved(Image.new("L", (66_000, 2), 128), "PNG")
    with pytest.raises(InvalidImage) as info:
        normalize_image_bytes(wide)
    assert info.value.reason == "too_many_pixels" and "65500" in info.value.detail
    assert open_rgb(wide).size == (66_000, 2)  # a query image need not fit a JPEG


def test_any_exception_from_pillow_becomes_undecodable(monkeypatch):
    data = saved(Image.new("L", (8, 8), 100), "PNG")  # L: needs a conversion

    def explode(self, *args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", explode)
    with pytest.raises(InvalidImage) as info:
        open_rgb(data)
    assert (info.value.reason, info.value.detail) == ("undecodable", "RuntimeError: decoder exploded")
    monkeypatch.undo()

    def no_memory(self, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "convert", no_memory)
    with pytest.raises(InvalidImage) as info:
        normalize_image_bytes(data)
    assert (info.value.reason, info.value.detail) == ("undecodable", "MemoryError")
    monkeypatch.undo()

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        normalize_image_bytes(data)
