"""The nightly refresh against hostile sources, on chdb and DuckDB: a truncated or empty
release, a UTF-8 byte-order mark, a lost image cache, a release naming local files, image
folders with same-named files, odd entries and ids from before, an image the model cannot
take whole, and an interrupt in the middle of a chunk."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess

import numpy as np
import pytest
from PIL import Image

from clipsql.db import open_store
from clipsql.download import DownloadOptions, image_path
from clipsql.errors import SourceError
from clipsql.refresh import refresh
from clipsql.status import status
from conftest import PHOTOS_HEADER, jpeg_bytes
from etl_support import cli_command, photo_row, rows, run_cli, subprocess_env, write_release

FAST = DownloadOptions(workers=4, retries=0, read_timeout_s=2.0)


def table_counts(backend) -> dict[str, int]:
    return {
        t: int(rows(backend, f"SELECT count() AS n FROM {t} FINAL")["n"][0])
        for t in ("photos", "download_status", "photo_embeddings", "keywords")
    } | {"deleted": int(rows(backend, "SELECT count() AS n FROM photos FINAL WHERE is_deleted = 1")["n"][0])}


def _encoded(image: Image.Image, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def test_no_image_ends_the_run_and_every_mode_is_embedded_faithfully(server, tmp_path, tiny_clip):
    """A corrupt AVIF (Pillow raises RuntimeError), a truncated JPEG, an HTML page and a 16-bit
    gray PNG, served over HTTP among good photos: the run ends ok, each bad photo recorded
    with its reason, the 16-bit photo cached at its true brightness (not clipped to white)."""
    gray16 = np.full((64, 96), 20_000, dtype=np.uint16)  # 20000/65535 of full scale: 78 of 255
    avif = _encoded(Image.fromarray(np.full((32, 32, 3), 90, np.uint8)), "AVIF")
    payload = avif.index(b"mdat") + 4
    server.files.update(
        {
            "/hostile/avif": avif[:payload]
            + bytes(b ^ 0xFF for b in avif[payload : payload + 16])
            + avif[payload + 16 :],
            "/hostile/truncated": jpeg_bytes(1, (400, 300))[:1500],
            "/hostile/html": b"<!DOCTYPE html><html><body>rate limited</body></html>",
            "/hostile/gray16": _encoded(Image.fromarray(gray16), "PNG"),
        }
    )
    hostile = [
        dict(photo_row(server.url, 0), photo_id=name, photo_image_url=f"{server.url}/hostile/{name}")
        for name in ("avif", "truncated", "html", "gray16")
    ]
    release = write_release(tmp_path / "release", server.url, range(3), extra_rows=hostile, keywords=False)
    store = tmp_path / "store"
    done = run_cli(
        "refresh", "--source", str(release), "--model", str(tiny_clip), "--store", str(store), "--retries", "0", "-q"
    )
    assert done.returncode == 0, done.stderr
    status_rows = rows(dict(store=store), "SELECT photo_id, status, reason, permanent FROM download_status FINAL")
    got = {r.photo_id: (r.status, r.reason if isinstance(r.reason, str) else None) for r in status_rows.itertuples()}
    assert got == {
        "photo0000": ("ok", None),
        "photo0001": ("ok", None),
        "photo0002": ("ok", None),
        "gray16": ("ok", None),
        "avif": ("failed", "undecodable"),
        "truncated": ("failed", "undecodable"),
        "html": ("failed", "not_an_image"),
    }
    assert set(status_rows[status_rows.status == "failed"]["permanent"]) == {1}
    assert int(rows(dict(store=store), "SELECT count() AS n FROM photo_embeddings FINAL")["n"][0]) == 4
    with Image.open(image_path(store / "images", "gray16")) as cached:
        assert abs(np.asarray(cached.convert("L"), np.float64).mean() - 20_000 * 255 / 65535) < 3


def test_a_truncated_release_is_refused_before_any_write_unless_allowed(server, tmp_path, tiny_clip, backend):
    go = dict(model=str(tiny_clip), download=FAST, progress=False, chunk_size=8, **backend)
    release = tmp_path / "release"
    refresh(write_release(release, server.url, range(30)), **go)
    before = table_counts(backend)

    # The release lost 20 of its 30 rows (a truncated download, say): 67% of the store.
    write_release(release, server.url, range(10))
    for purge in (False, True):
        with pytest.raises(SourceError, match=r"lacks 20 of the store's 30 photos .*--max-delete-fraction 0\.67"):
            refresh(release, purge=purge, **go)
    assert table_counts(backend) == before
    runs = rows(backend, "SELECT status, error FROM etl_runs FINAL ORDER BY version")
    assert runs["status"].tolist()[-2:] == ["failed", "failed"]  # the refused nights are on record

    # The CLI: exit 2, one line naming both counts and the option.
    backend_args = ["--store", str(backend["store"])] + (["--duckdb", backend["duckdb"]] if backend["duckdb"] else [])
    done = run_cli("refresh", "--source", str(release), "--model", str(tiny_clip), "-q", *backend_args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "lacks 20 of the store's 30 photos" in done.stderr and "--max-delete-fraction" in done.stderr
    assert table_counts(backend) == before

    # A share just above the run's is allowed: 20 photos flagged deleted, vectors kept.
    allowed = refresh(release, max_delete_fraction=0.67, **go)
    assert allowed.deleted == 20
    assert table_counts(backend) == dict(before, deleted=20)


@pytest.mark.parametrize(
    "content",
    ["", "\t".join(PHOTOS_HEADER) + "\n", "\ufeff" + "\t".join(PHOTOS_HEADER) + "\n"],
    ids=["zero-bytes", "header-only", "bom-header-only"],
)
def test_an_empty_photos_file_is_an_error_on_a_new_store(tmp_path, tiny_clip, content):
    source = tmp_path / "photos.tsv000"
    source.write_text(content, encoding="utf-8")
    store = tmp_path / "store"
    with pytest.raises(SourceError, match="holds no photos"):
        refresh(source, model=str(tiny_clip), store=store, progress=False)
    done = run_cli("refresh", "--source", str(source), "--model", str(tiny_clip), "--store", str(store), "-q")
    assert done.returncode == 2 and "holds no photos" in done.stderr and done.stderr.count("\n") == 1


def test_a_byte_order_mark_before_the_header_is_accepted(server, tmp_path, tiny_clip):
    release = write_release(tmp_path / "release", server.url, range(3), keywords=False)
    path = release / "photos.tsv000"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summary = refresh(release, model=str(tiny_clip), store=tmp_path / "store", download=FAST, progress=False)
    assert summary.stage("embed").ok == 3 and summary.malformed_rows == 0


def test_a_lost_image_cache_is_fetched_again_without_embedding_again(server, tmp_path, tiny_clip, backend):
    go = dict(model=str(tiny_clip), download=FAST, progress=False, chunk_size=4, **backend)
    release = write_release(tmp_path / "release", server.url, range(6))
    refresh(release, **go)
    vectors = rows(backend, "SELECT photo_id, version FROM photo_embeddings FINAL ORDER BY photo_id")
    images = backend["store"] / "images"
    for i in (1, 4):
        image_path(images, f"photo{i:04d}").unlink()
    assert status(**backend).missing_images == 2
    assert "2 photos recorded as downloaded have no cached image" in status(**backend).format()

    hits = server.total()
    again = refresh(release, **go)
    assert server.total() - hits == 2 and again.stage("embed").ok == 0
    assert all(image_path(images, f"photo{i:04d}").is_file() for i in range(6))
    assert rows(backend, "SELECT photo_id, version FROM photo_embeddings FINAL ORDER BY photo_id").equals(vectors)
    assert status(**backend).missing_images == 0


def test_a_release_naming_local_files_reads_none_of_them(server, tmp_path, tiny_clip):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes(5))
    local = [
        dict(photo_row(server.url, 90), photo_id="abs", photo_image_url=str(secret)),
        dict(photo_row(server.url, 91), photo_id="uri", photo_image_url=secret.as_uri()),
        dict(photo_row(server.url, 92), photo_id="passwd", photo_image_url="/etc/passwd"),
    ]
    release = write_release(tmp_path / "release", server.url, range(2), extra_rows=local, keywords=False)
    store = tmp_path / "store"
    summary = refresh(release, model=str(tiny_clip), store=store, download=FAST, progress=False)
    assert summary.stage("embed").ok == 2 and summary.failures_by_reason == {"bad_url": 3}
    failed = rows(
        dict(store=store),
        "SELECT photo_id, permanent FROM download_status FINAL WHERE reason = 'bad_url' ORDER BY photo_id",
    )
    assert failed["photo_id"].tolist() == ["abs", "passwd", "uri"] and set(failed["permanent"]) == {1}
    assert sorted(p.name for p in (store / "images").iterdir()) == ["photo0000.jpg", "photo0001.jpg"]


def test_image_folders_index_every_file_and_report_what_they_skip(tmp_path, tiny_clip, backend):
    folder = tmp_path / "photos"
    for sub, seed in (("2023", 1), ("2024", 2), ("", 3)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "beach.jpg").write_bytes(jpeg_bytes(seed))
    (folder / "album.jpg").mkdir()  # a directory named like an image
    os.mkfifo(folder / "pipe.jpg")  # reading a FIFO would block the run
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    go = dict(model=str(tiny_clip), progress=False, **backend)
    summary = refresh(folder, **go)
    ids = rows(backend, "SELECT photo_id FROM photo_embeddings FINAL ORDER BY photo_id")["photo_id"].tolist()
    assert ids == ["2023/beach.jpg", "2024/beach.jpg", "beach.jpg"]
    assert summary.skipped_entries == [
        "album.jpg: a directory, not an image file",
        "loop-a.jpg: a symlink loop",
        "loop-b.jpg: a symlink loop",
        "pipe.jpg: a FIFO, not a regular file",
    ]
    assert "folder entries skipped: 4" in summary.format() and "pipe.jpg" in summary.format()
    # Ids with a path separator get a cache file of their own inside the cache.
    cached = [image_path(backend["store"] / "images", i) for i in ids]
    assert len(set(cached)) == 3 and all(p.is_file() and p.parent == backend["store"] / "images" for p in cached)


def test_a_store_indexed_with_file_stem_ids_keeps_its_photos_and_vectors(tmp_path, tiny_clip, backend):
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    (folder / "beach.jpg").write_bytes(jpeg_bytes(1))
    (folder / "trip" / "forest.png").write_bytes(jpeg_bytes(2))
    go = dict(model=str(tiny_clip), progress=False, **backend)
    refresh(folder, **go)
    # Turn the store into one written by clipsql <= 0.1 (photo_id = file stem): the same
    # rename script, the other way round.
    with open_store(**backend) as db:
        db.run_script("rename_photos", {"old_ids": ["beach.jpg", "trip/forest.png"], "new_ids": ["beach", "forest"]})
    images = backend["store"] / "images"
    for new, old in (("beach.jpg", "beach"), ("trip/forest.png", "forest")):
        os.replace(image_path(images, new), image_path(images, old))
    vectors = rows(backend, "SELECT photo_id, embedding FROM photo_embeddings FINAL ORDER BY photo_id")
    assert vectors["photo_id"].tolist() == ["beach", "forest"]

    summary = refresh(folder, **go)
    assert summary.renamed == 2 and summary.deleted == 0 and summary.stage("embed").ok == 0
    after = rows(backend, "SELECT photo_id, embedding FROM photo_embeddings FINAL ORDER BY photo_id")
    assert after["photo_id"].tolist() == ["beach.jpg", "trip/forest.png"]
    np.testing.assert_array_equal(np.stack(after["embedding"]), np.stack(vectors["embedding"]))
    assert rows(backend, "SELECT photo_id FROM photos FINAL ORDER BY photo_id")["photo_id"].tolist() == [
        "beach.jpg",
        "trip/forest.png",
    ]
    assert image_path(images, "trip/forest.png").is_file() and not image_path(images, "forest").exists()


def test_an_extreme_strip_is_embedded_as_its_centre(tmp_path, tiny_clip, embedder):
    from clipsql.embed import embed_photos

    # 1 x 40,000 px: resized whole to 224 px wide it would be 224 x 8,960,000 px (24 GB as float32).
    strip = np.random.default_rng(0).integers(0, 256, (40_000, 1, 3), dtype=np.uint8)
    path = tmp_path / "strip.png"
    Image.fromarray(strip).save(path)
    [batch] = list(embed_photos([("strip", path)], embedder, progress=False))
    assert batch.failures == [] and batch.embeddings.shape == (1, 512)
    # What the model sees is the centre square, as without the cut (checked at a ratio that
    # can still be processed whole).
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 400, 3), dtype=np.uint8))
    whole = embedder.processor(images=[wide], return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(embedder.preprocess([wide])["pixel_values"].numpy(), whole.numpy(), atol=0.05)


def test_an_interrupt_mid_chunk_keeps_the_stored_batches_and_logs_only_them(server, tmp_path, tiny_clip):
    release = write_release(tmp_path / "release", server.url, range(40), keywords=False)
    store = tmp_path / "store"
    # One chunk of 40 photos, embedded 2 at a time; the run is paused after its third stored
    # batch, then stopped the way systemd and Airflow stop it.
    process = subprocess.Popen(
        cli_command(
            "refresh",
            "--source",
            str(release),
            "--model",
            str(tiny_clip),
            "--store",
            str(store),
            "--chunk-size",
            "64",
            "--batch-size",
            "2",
            "--workers",
            "4",
            "--retries",
            "0",
            "-q",
            "-vv",
        ),
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    stored = 0
    try:
        for line in process.stderr:
            if re.search(r"DEBUG clipsql\.refresh: \d+ vectors stored", line):
                stored += 1
                if stored == 3:
                    process.send_signal(signal.SIGSTOP)
                    process.send_signal(signal.SIGTERM)
                    process.send_signal(signal.SIGCONT)
                    break
        rest = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert stored == 3 and process.returncode == 130, rest[-2000:]
    vectors = int(rows(dict(store=store), "SELECT count() AS n FROM photo_embeddings FINAL")["n"][0])
    run = rows(dict(store=store), "SELECT status, embed_ok FROM etl_runs FINAL ORDER BY version DESC LIMIT 1")
    assert run["status"][0] == "interrupted"
    assert 6 <= vectors < 40 and int(run["embed_ok"][0]) == vectors


def test_one_image_the_model_cannot_take_fails_alone(tmp_path, embedder):
    """Fault injection (no real image makes the tiny model fail): an embedder whose
    preprocessing raises on one image size. The batch is redone photo by photo; that photo
    fails 'embed_failed', the others get the vectors a healthy batch gives them."""
    from clipsql.embed import EMBED_FAILED, embed_photos

    class Flaky:
        dim, processor = embedder.dim, embedder.processor

        def preprocess(self, images):
            if any(im.size == (13, 17) for im in images):
                raise ValueError("cannot take 13 x 17")
            return embedder.preprocess(images)

        def embed_pixels(self, pixels):
            return embedder.embed_pixels(pixels)

    items = []
    for i, size in enumerate([(96, 64), (13, 17), (64, 96)]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(i, size))
        items.append((f"p{i}", path))
    [batch] = list(embed_photos(items, Flaky(), batch_size=3, progress=False))
    assert batch.photo_ids == ["p0", "p2"]
    assert [(pid, reason) for pid, reason, _ in batch.failures] == [("p1", EMBED_FAILED)]
    assert "ValueError: cannot take 13 x 17" in batch.failures[0][2]
    [healthy] = list(embed_photos([items[0], items[2]], embedder, batch_size=2, progress=False))
    np.testing.assert_allclose(batch.embeddings, healthy.embeddings, atol=1e-5)
