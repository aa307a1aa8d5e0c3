"""Shared fixtures: a tiny random CLIP, generated images, a loopback image server, releases.

Nothing here reaches the network but 127.0.0.1; every server is stopped by its fixture.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "unsplash-lite-7k"
PHOTOS_HEADER = [
    "photo_id",
    "photo_url",
    "photo_image_url",
    "photo_submitted_at",
    "photo_featured",
    "photo_width",
    "photo_height",
    "photo_aspect_ratio",
    "photo_description",
    "photographer_username",
    "photographer_first_name",
    "photographer_last_name",
    "exif_camera_make",
    "exif_camera_model",
    "exif_iso",
    "exif_aperture_value",
    "exif_focal_length",
    "exif_exposure_time",
    "photo_location_name",
    "photo_location_latitude",
    "photo_location_longitude",
    "photo_location_country",
    "photo_location_city",
    "stats_views",
    "stats_downloads",
    "ai_description",
    "ai_primary_landmark_name",
    "ai_primary_landmark_latitude",
    "ai_primary_landmark_longitude",
    "ai_primary_landmark_confidence",
]


def _bytes_to_unicode() -> list[str]:
    # GPT-2/CLIP byte-level alphabet: 256 printable stand-ins for the bytes.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_tiny_clip(out: Path, dim: int = 512, seed: int = 0) -> Path:
    """A CLIP checkpoint with random weights (torch seed `seed`), a `dim`-wide projection
    (512: ViT-B/32's width), tiny towers, and a byte-level tokenizer without merges; saved
    with save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    alphabet = _bytes_to_unicode()
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(vocab), max_position_embeddings=77),
        vision_config=dict(small, patch_size=32, image_size=224),
        projection_dim=dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(out)
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def embedder(tiny_clip):
    from clipsql.embed import ClipEmbedder

    return ClipEmbedder(str(tiny_clip), device="cpu")


def jpeg_bytes(seed: int, size=(96, 64), mode="RGB", **save) -> bytes:
    """A JPEG of random smooth color blobs (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BILINEAR)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format="JPEG", **save)
    return out.getvalue()


def png_bomb_bytes(width=12_000, height=12_000) -> bytes:
    """A PNG of width x height black pixels: a few hundred KB that decode to gigabytes."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG", optimize=True)
    return out.getvalue()


class ImageServer:
    """A loopback HTTP server of test images and failure modes.

    Routes: /img/<seed>.jpg (a valid JPEG), /flaky/<key>.jpg (503 twice, then the image),
    /retry-after/<key>.jpg (429 with Retry-After: 1 once), /slow.jpg (sleeps past any short
    read timeout), /missing.jpg (404), /truncated.jpg, /empty.jpg, /html.jpg (an HTML page
    with Content-Type image/jpeg), /huge.jpg (a 3 MB body), /bomb.png (12000x12000 PNG).
    """

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self.truncated = jpeg_bytes(1, (400, 300))[:2000]
        self.bomb = png_bomb_bytes()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send_body(self, status, body, ctype="image/jpeg", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                server.times.setdefault(path, []).append(time.monotonic())
                n = server.hits[path]
                if path.startswith("/img/"):
                    self.send_body(200, jpeg_bytes(int(Path(path).stem)))
                elif path.startswith("/flaky/"):
                    if n <= 2:
                        self.send_body(503, b"busy", "text/plain")
                    else:
                        self.send_body(200, jpeg_bytes(7))
                elif path.startswith("/retry-after/"):
                    if n == 1:
                        self.send_body(429, b"slow down", "text/plain", [("Retry-After", "1")])
                    else:
                        self.send_body(200, jpeg_bytes(8))
                elif path == "/slow.jpg":
                    time.sleep(3)
                    self.send_body(200, jpeg_bytes(9))
                elif path == "/truncated.jpg":
                    self.send_body(200, server.truncated)
                elif path == "/empty.jpg":
                    self.send_body(200, b"")
                elif path == "/html.jpg":
                    self.send_body(200, b"<!DOCTYPE html><html><body>Not found</body></html>")
                elif path == "/huge.jpg":
                    self.send_body(200, b"\xff\xd8" + b"\0" * 3_000_000)
                elif path == "/bomb.png":
                    self.send_body(200, server.bomb, "image/png")
                else:
                    self.send_body(404, b"no such image", "text/plain")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    """The ETL tests' loopback server (etl_support.EtlServer), stopped at the end."""
    from etl_support import EtlServer  # etl_support imports this module: import it late

    s = EtlServer()
    yield s
    s.stop()


@pytest.fixture(params=["chdb", "duckdb"])
def backend(request, tmp_path):
    """A store on chdb and, once more, on DuckDB: open_store's keywords."""
    store = tmp_path / "store"
    return dict(store=store, duckdb=str(tmp_path / "clipsql.duckdb") if request.param == "duckdb" else None)


@pytest.fixture
def image_server():
    server = ImageServer()
    yield server
    server.stop()


def write_photos_tsv(path: Path, rows: list[dict]) -> Path:
    """A photos.tsv in the Unsplash format: the 30 columns, a header, empty = missing."""
    lines = ["\t".join(PHOTOS_HEADER)]
    for row in rows:
        lines.append("\t".join(str(row.get(c, "")) for c in PHOTOS_HEADER))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_release(folder: Path, base_url: str, n: int, extra_rows: list[dict] = ()) -> Path:
    """A release directory: photos.tsv000 with n photos served from base_url/img/<i>.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    countries = ["Iceland", "Japan", "Peru", "Kenya"]
    rows = [
        {
            "photo_id": f"photo{i:04d}",
            "photo_url": f"https://unsplash.com/photos/photo{i:04d}",
            "photo_image_url": f"{base_url}/img/{i}.jpg",
            "photo_submitted_at": f"2021-0{1 + i % 9}-1{i % 10} 10:00:00.123",
            "photo_featured": "t" if i % 3 == 0 else "f",
            "photo_width": 4000 + i,
            "photo_height": 3000,
            "photo_aspect_ratio": "1.33",
            "photo_description": f"test photo number {i}",
            "photographer_username": f"user{i % 5}",
            "photo_location_country": countries[i % 4],
            "stats_views": 1000 * i,
            "stats_downloads": 10 * i,
        }
        for i in range(n)
    ]
    write_photos_tsv(folder / "photos.tsv000", rows + list(extra_rows))
    return folder
