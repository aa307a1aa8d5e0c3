"""Helpers of the ETL tests (incremental runs, kills, locks): a loopback image server with
per-route failure modes, releases that grow, change and shrink, and table snapshots.

Nothing here reaches the network but 127.0.0.1; the server is stopped by its fixture.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from clipsql.db import open_store
from conftest import jpeg_bytes, write_photos_tsv

REPO = Path(__file__).resolve().parents[1]
KEYWORDS_HEADER = "photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\tsuggested_by_user"


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that drops a keep-alive connection (a finished run's session) is normal.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class EtlServer:
    """Loopback HTTP server: /img/<n>.jpg (a JPEG, distinct per n), /missing/<key>.jpg (404),
    /busy/<key>.jpg (503, always), /once/<key>.jpg (503 the first time, then a JPEG), and
    any path put in `files` (its bytes, 200). `hits` counts requests per path (query string
    dropped)."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send_body(self, status, body, ctype="image/jpeg"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                with server.lock:
                    server.hits[path] = n = server.hits.get(path, 0) + 1
                if path in server.files:
                    self.send_body(200, server.files[path], "application/octet-stream")
                elif path.startswith("/img/"):
                    self.send_body(200, jpeg_bytes(int(Path(path).stem)))
                elif path.startswith("/busy/") or (path.startswith("/once/") and n == 1):
                    self.send_body(503, b"busy", "text/plain")
                elif path.startswith("/once/"):
                    self.send_body(200, jpeg_bytes(999))
                else:
                    self.send_body(404, b"no such image", "text/plain")

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def total(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def photo_row(base_url: str, i: int, views: int | None = None) -> dict:
    return {
        "photo_id": f"photo{i:04d}",
        "photo_url": f"https://unsplash.com/photos/photo{i:04d}",
        "photo_image_url": f"{base_url}/img/{i}.jpg",
        "photo_description": f"test photo number {i}",
        "photo_location_country": ["Iceland", "Japan", "Peru", "Kenya"][i % 4],
        "stats_views": 1000 * i if views is None else views,
        "photo_width": 640,
        "photo_height": 480,
    }


def write_release(
    folder: Path,
    base_url: str,
    numbers,
    *,
    views: dict[int, int] | None = None,
    extra_rows: list[dict] = (),
    keywords: bool = True,
) -> Path:
    """A release folder: photos.tsv000 with photo<i> for i in `numbers` (image /img/<i>.jpg),
    `extra_rows` appended, and a keywords.tsv000 with two keywords per photo<i>."""
    folder.mkdir(parents=True, exist_ok=True)
    views = views or {}
    rows = [photo_row(base_url, i, views.get(i)) for i in numbers] + list(extra_rows)
    write_photos_tsv(folder / "photos.tsv000", rows)
    if keywords:
        lines = [KEYWORDS_HEADER] + [
            f"photo{i:04d}\t{word}\t{50 + i % 40}.5\t\tf" for i in numbers for word in ("sky", f"tag{i % 3}")
        ]
        (folder / "keywords.tsv000").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # A new release is a new file: make the modification time differ from the last one's.
    stamp = os.stat(folder / "photos.tsv000").st_mtime
    os.utime(folder / "photos.tsv000", (stamp, stamp + len(rows)))
    return folder


def cli_command(*args: str) -> list[str]:
    """`clipsql ARGS` as a subprocess argv (the package as installed in this interpreter)."""
    return [sys.executable, "-m", "clipsql.cli", *args]


def subprocess_env() -> dict:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def rows(backend: dict, sql: str) -> pd.DataFrame:
    """The result of one ClickHouse-dialect query on a store (`backend`: open_store's keywords)."""
    with open_store(**backend) as db:
        return db.query_clickhouse(sql)


def snapshot(backend: dict) -> dict[str, pd.DataFrame]:
    """The store's tables as reads see them, without the columns that record when or by which
    run a row was written (version, loaded_at, last_attempt_at, completed_at).

    For ok downloads http_status is dropped too: a run killed between an image's rename and
    its status row leaves a cached image whose status the rerun records without an HTTP status.
    """
    with open_store(**backend) as db:
        q = db.query_clickhouse
        photos = (
            q("SELECT * EXCEPT (version) FROM photos FINAL ORDER BY photo_id")
            if db.dialect == "clickhouse"
            else q("SELECT * EXCLUDE (version) FROM photos ORDER BY photo_id")
        )
        status = q(
            "SELECT photo_id, url, status, reason, permanent, attempts, bytes, width, height, "
            "CASE WHEN status = 'ok' THEN NULL ELSE http_status END AS http_status "
            "FROM download_status FINAL ORDER BY photo_id"
        )
        vectors = q("SELECT model, photo_id, embedding FROM photo_embeddings FINAL ORDER BY model, photo_id")
        keywords = q(
            "SELECT photo_id, keyword, ai_service_1_confidence, suggested_by_user "
            "FROM keywords FINAL ORDER BY photo_id, keyword"
        )
        models = q(
            "SELECT model, model_source, dim, CASE WHEN completed_at IS NULL THEN 0 ELSE 1 END AS complete "
            "FROM models FINAL ORDER BY model"
        )
        runs = q("SELECT run_id, status, version FROM etl_runs FINAL ORDER BY version")
        # The search relation (a view over the tables above), its flat columns; keywords sorted
        # here since the engines aggregate them in no set order.
        relation = q(
            "SELECT model, photo_id, description, country, width, orientation, featured, keywords, color "
            "FROM photo_search ORDER BY model, photo_id"
        )
        relation["keywords"] = relation["keywords"].map(lambda k: sorted(k))
        # Each width's approximate index (ClickHouse: photo_embeddings_ann_<dim>) must hold
        # exactly the stored vectors of that width once a refresh has ended.
        ann_mismatch = 0
        if db.dialect == "clickhouse":
            tables = q("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")["name"]
            stored = {(m, p): tuple(np.round(e, 5)) for m, p, e in vectors.itertuples(index=False)}
            indexed: dict = {}
            for table in (t for t in tables if t.startswith("photo_embeddings_ann_")):
                ann = q(f"SELECT model, photo_id, embedding FROM {table} FINAL")
                indexed.update({(m, p): tuple(np.round(e, 5)) for m, p, e in ann.itertuples(index=False)})
            ann_mismatch = len(set(stored.items()) ^ set(indexed.items()))
        dupes = {
            t: int(q(f"SELECT count() - count(DISTINCT {key}) AS d FROM {t} FINAL")["d"].iloc[0])
            for t, key in (
                ("photos", "photo_id"),
                ("download_status", "photo_id"),
                ("photo_embeddings", "(model, photo_id)" if db.dialect == "clickhouse" else "model || '/' || photo_id"),
            )
        }
    return {
        "photos": photos,
        "status": status,
        "vectors": vectors,
        "keywords": keywords,
        "models": models,
        "runs": runs,
        "relation": relation,
        "dupes": dupes,
        "ann_mismatch": ann_mismatch,
    }


def assert_same_tables(got: dict, want: dict) -> None:
    """Two snapshots hold the same rows (vectors equal to float tolerance)."""
    for name in ("photos", "status", "keywords", "models", "relation"):
        pd.testing.assert_frame_equal(
            got[name].reset_index(drop=True), want[name].reset_index(drop=True), check_dtype=False, obj=name
        )
    assert (
        got["vectors"][["model", "photo_id"]].values.tolist() == want["vectors"][["model", "photo_id"]].values.tolist()
    )
    np.testing.assert_allclose(
        np.stack([np.asarray(v, np.float32) for v in got["vectors"]["embedding"]]),
        np.stack([np.asarray(v, np.float32) for v in want["vectors"]["embedding"]]),
        atol=1e-5,
    )
    assert got["dupes"] == want["dupes"] == {k: 0 for k in got["dupes"]}
    assert got["ann_mismatch"] == want["ann_mismatch"] == 0, "an approximate index differs from photo_embeddings"
