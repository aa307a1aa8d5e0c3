"""The main job on real Unsplash Lite photos from ../shared (skipped where it is absent).

A loopback server started here serves the photos folder, so downloads go over HTTP as
they would from images.unsplash.com. The subset holds the truncated photo and the
grayscale one that the full acceptance run on the shared 7k photos (docs/speed.md) must cope with.
"""

import functools
import http.server
import threading

import numpy as np
import pytest

from clipsql import refresh
from clipsql.db import open_store
from clipsql.download import DownloadOptions
from conftest import SHARED_PHOTOS

pytestmark = pytest.mark.skipif(
    not (SHARED_PHOTOS / "photos.tsv000").exists(),
    reason=f"real photos not found at {SHARED_PHOTOS} (../shared/data/unsplash-lite-7k)",
)
TRUNCATED, GRAYSCALE = "iKCh4GZy-j0", "aGx7X1VmFIY"


@pytest.fixture
def mirror():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHARED_PHOTOS))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_real_subset_with_truncated_and_grayscale_photos(mirror, tmp_path, tiny_clip):
    lines = (SHARED_PHOTOS / "photos.tsv000").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    chosen = rows[:30] + [r for r in rows if r.split("\t")[0] in (TRUNCATED, GRAYSCALE)]
    tsv = tmp_path / "photos.tsv000"
    tsv.write_text("\n".join([header] + [r.replace("http://127.0.0.1:8765", mirror) for r in chosen]) + "\n")
    store = tmp_path / "store"
    summary = refresh(tsv, model=str(tiny_clip), store=store, download=DownloadOptions(workers=8), progress=False)
    assert summary.stage("download").ok == 31 and summary.failures_by_reason == {"undecodable": 1}
    with open_store(store) as db:
        failed = db.query_df("SELECT photo_id, reason, detail FROM download_status FINAL WHERE status = 'failed'")
        vectors = db.query_df("SELECT photo_id, embedding FROM photo_embeddings FINAL")
    assert failed["photo_id"].tolist() == [TRUNCATED] and "truncated" in failed["detail"][0]
    assert GRAYSCALE in set(vectors["photo_id"]) and len(vectors) == 31
    assert np.allclose([np.linalg.norm(v) for v in vectors["embedding"]], 1.0, atol=1e-5)
