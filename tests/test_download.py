import io

import pytest
from PIL import Image

from clipsql.download import DownloadOptions, download_photos, with_width
from clipsql.errors import BadArgument
from conftest import jpeg_bytes

FAST = DownloadOptions(
    workers=4, retries=3, backoff_s=0.05, read_timeout_s=1.0, connect_timeout_s=1.0, max_bytes=1_000_000
)


def by_id(results):
    return {r.photo_id: r for r in results}


def test_failure_modes_each_end_with_a_reason(image_server, tmp_path):
    u = image_server.url
    photos = [
        ("ok", f"{u}/img/1.jpg"),
        ("flaky", f"{u}/flaky/a.jpg"),
        ("slow", f"{u}/slow.jpg"),
        ("missing", f"{u}/missing.jpg"),
        ("truncated", f"{u}/truncated.jpg"),
        ("empty", f"{u}/empty.jpg"),
        ("html", f"{u}/html.jpg"),
        ("huge", f"{u}/huge.jpg"),
        ("bomb", f"{u}/bomb.png"),
        ("refused", "http://127.0.0.1:9/x.jpg"),
        ("nourl", None),
    ]
    results = by_id(download_photos(photos, tmp_path, FAST, progress=False))
    assert results["ok"].ok and results["flaky"].ok
    assert image_server.hits["/flaky/a.jpg"] == 3  # failed twice, answered on the third
    expected = {
        "slow": "timeout",
        "missing": "http_4xx",
        "truncated": "undecodable",
        "empty": "empty",
        "html": "not_an_image",
        "huge": "too_large",
        "bomb": "too_many_pixels",
        "refused": "connection_error",
        "nourl": "bad_url",
    }
    assert {k: results[k].reason for k in expected} == expected
    assert results["missing"].http_status == 404 and results["missing"].permanent
    assert not results["slow"].permanent and not results["refused"].permanent
    assert "HTML" in results["html"].detail
    # Only valid images reached the cache, and no temporary file was left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flaky.jpg", "ok.jpg"]


def test_retry_after_is_honoured(image_server, tmp_path):
    [result] = download_photos([("ra", f"{image_server.url}/retry-after/x.jpg")], tmp_path, FAST, progress=False)
    assert result.ok
    first, second = image_server.times["/retry-after/x.jpg"]
    assert second - first >= 0.9  # Retry-After: 1 second, not the 0.05 s backoff


def test_cache_is_reused_without_requests(image_server, tmp_path):
    photos = [(f"p{i}", f"{image_server.url}/img/{i}.jpg") for i in range(5)]
    first = download_photos(photos, tmp_path, FAST, progress=False)
    hits = sum(image_server.hits.values())
    second = download_photos(photos, tmp_path, FAST, progress=False)
    assert sum(image_server.hits.values()) == hits == 5
    assert all(r.cached for r in second) and not any(r.cached for r in first)
    assert [r.width for r in second] == [96] * 5


def test_width_parameter_is_set_on_unsplash_urls():
    assert (
        with_width("https://images.unsplash.com/photo-1?ixid=abc&w=4000", 640)
        == "https://images.unsplash.com/photo-1?ixid=abc&w=640"
    )
    assert with_width("http://x/y.jpg", 640) == "http://x/y.jpg?w=640"
    assert with_width("http://x/y.jpg", 0) == "http://x/y.jpg"


def test_exif_orientation_and_mode_are_normalized(tmp_path):
    rotated = Image.new("RGB", (80, 40), (200, 10, 10))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    rotated.save(out, format="JPEG", exif=exif)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "r.jpg").write_bytes(out.getvalue())
    (tmp_path / "src" / "g.jpg").write_bytes(jpeg_bytes(3, mode="L"))
    results = download_photos(
        [("r", str(tmp_path / "src" / "r.jpg")), ("g", (tmp_path / "src" / "g.jpg").as_uri())],
        tmp_path / "cache",
        FAST,
        progress=False,
        allow_local_files=True,
    )
    assert all(r.ok for r in results)
    with Image.open(tmp_path / "cache" / "r.jpg") as im:
        assert im.size == (40, 80) and im.mode == "RGB"
    with Image.open(tmp_path / "cache" / "g.jpg") as im:
        assert im.mode == "RGB"


def test_local_files_are_read_only_when_the_caller_allows_them(tmp_path):
    (tmp_path / "src").mkdir()
    local = tmp_path / "src" / "a.jpg"
    local.write_bytes(jpeg_bytes(4))
    photos = [("path", str(local)), ("uri", local.as_uri()), ("ftp", "ftp://127.0.0.1/a.jpg")]
    refused = by_id(download_photos(photos, tmp_path / "cache", FAST, progress=False))
    assert {k: (r.reason, r.permanent) for k, r in refused.items()} == {k: ("bad_url", True) for k in refused}
    assert refused["path"].detail == refused["uri"].detail == "local paths are only read for image-folder sources"
    assert list((tmp_path / "cache").iterdir()) == []  # nothing was read, nothing cached
    allowed = by_id(download_photos(photos, tmp_path / "cache", FAST, progress=False, allow_local_files=True))
    assert allowed["path"].ok and allowed["uri"].ok
    assert allowed["ftp"].reason == "bad_url"  # other schemes stay refused


def test_malformed_urls_and_other_schemes_fail_as_bad_url(tmp_path):
    photos = [
        ("v6", "http://[::1"),
        ("nohost", "http://"),
        ("js", "javascript:alert(1)"),
        ("port", "http://127.0.0.1:99999/x.jpg"),
    ]
    results = by_id(download_photos(photos, tmp_path, FAST, progress=False))
    assert {k: (r.reason, r.permanent) for k, r in results.items()} == {k: ("bad_url", True) for k, _ in photos}
    assert "javascript: URLs are not fetched" in results["js"].detail


@pytest.mark.parametrize(
    "setting",
    [
        dict(read_timeout_s=float("nan")),
        dict(total_timeout_s=float("inf")),
        dict(connect_timeout_s=1e9),
        dict(max_retry_after_s=float("nan")),
        dict(workers=10_000),
        dict(retries=1000),
        dict(workers=2.5),
    ],
)
def test_settings_that_would_unbound_a_wait_are_refused_before_any_request(image_server, tmp_path, setting):
    with pytest.raises(BadArgument, match="download " + next(iter(setting))):
        download_photos([("a", f"{image_server.url}/img/1.jpg")], tmp_path, DownloadOptions(**setting))
    assert image_server.hits == {}
