import zipfile

import pyarrow as pa
import pytest

from clipsql.errors import BadArgument, SourceError
from clipsql.sources import read_source
from conftest import PHOTOS_HEADER, jpeg_bytes, write_photos_tsv


def test_photos_tsv_is_typed_and_empty_fields_are_null(tmp_path):
    write_photos_tsv(
        tmp_path / "photos.tsv000",
        [
            {
                "photo_id": "-abc_123XYZ",
                "photo_submitted_at": "2020-04-16 20:13:01.617",
                "photo_featured": "t",
                "photo_width": "6000",
                "photo_aspect_ratio": "1.5",
                "stats_views": "123456",
                "photo_location_latitude": "64.1",
            },
            {"photo_id": "second", "photo_featured": "f"},
        ],
    )
    data = read_source(tmp_path)
    rows = data.photos.to_pylist()
    assert data.kind == "unsplash" and data.malformed == []
    assert rows[0]["photo_id"] == "-abc_123XYZ"
    assert rows[0]["photo_submitted_at"].isoformat() == "2020-04-16T20:13:01.617000+00:00"
    assert rows[0]["photo_featured"] is True and rows[1]["photo_featured"] is False
    assert rows[0]["photo_width"] == 6000 and rows[0]["stats_views"] == 123456
    assert rows[0]["photo_aspect_ratio"] == 1.5 and rows[0]["photo_location_latitude"] == 64.1
    assert rows[1]["photo_width"] is None and rows[1]["photo_description"] is None
    assert data.photos.schema.field("photo_submitted_at").type == pa.timestamp("ms", tz="UTC")


def test_malformed_rows_are_skipped_and_reported_with_line_numbers(tmp_path):
    path = write_photos_tsv(
        tmp_path / "photos.tsv000",
        [
            {"photo_id": "good1"},
            {"photo_id": "badint", "photo_width": "wide"},
            {"photo_id": "badbool", "photo_featured": "maybe"},
            {"photo_id": "badtime", "photo_submitted_at": "yesterday"},
            {"photo_id": "good1"},  # duplicate of line 2
            {"photo_id": ""},
            {"photo_id": "good2", "exif_iso": "100"},
        ],
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write("short\trow\n")
    data = read_source(path)
    assert data.photos["photo_id"].to_pylist() == ["good1", "good2"]
    reported = {m.line: m.reason for m in data.malformed}
    assert sorted(reported) == [3, 4, 5, 6, 7, 9]
    assert "photo_width" in reported[3] and "'wide'" in reported[3]
    assert "photo_featured" in reported[4]
    assert "photo_submitted_at" in reported[5]
    assert "duplicate photo_id 'good1'" in reported[6] and "photos.tsv000:2" in reported[6]
    assert "photo_id" in reported[7]
    assert "expected 30 tab-separated fields, got 2" in reported[9]
    assert all(m.file == "photos.tsv000" for m in data.malformed)


def test_limit_takes_the_first_photos_and_filters_extras(tmp_path):
    write_photos_tsv(tmp_path / "photos.tsv000", [{"photo_id": f"p{i}"} for i in range(10)])
    (tmp_path / "keywords.tsv000").write_text(
        "photo_id\tkeyword\tai_service_1_confidence\tai_service_2_confidence\tsuggested_by_user\n"
        "p0\tdog\t45.5\t\tt\np7\tcat\t\t12\tf\n",
        encoding="utf-8",
    )
    data = read_source(tmp_path, limit=3)
    assert data.photos["photo_id"].to_pylist() == ["p0", "p1", "p2"]
    assert data.extras["keywords"].to_pylist() == [
        {
            "photo_id": "p0",
            "keyword": "dog",
            "ai_service_1_confidence": 45.5,
            "ai_service_2_confidence": None,
            "suggested_by_user": True,
        }
    ]
    with pytest.raises(BadArgument, match="limit"):
        read_source(tmp_path, limit=0)


def test_zip_with_numbered_parts_in_a_subfolder(tmp_path):
    header = "\t".join(PHOTOS_HEADER)
    empty = "\t" * (len(PHOTOS_HEADER) - 1)
    with zipfile.ZipFile(tmp_path / "lite.zip", "w") as z:
        z.writestr("unsplash-research-dataset-lite-latest/photos.tsv000", f"{header}\na{empty}\nb{empty}\n")
        z.writestr("unsplash-research-dataset-lite-latest/photos.tsv001", f"{header}\nc{empty}\n")
        z.writestr(
            "unsplash-research-dataset-lite-latest/colors.tsv000",
            "photo_id\thex\tred\tgreen\tblue\tkeyword\tcoverage\tscore\nc\t#0a0b0c\t10\t11\t12\tblack\t55.5\t0.9\n",
        )
    data = read_source(tmp_path / "lite.zip")
    assert data.photos["photo_id"].to_pylist() == ["a", "b", "c"]
    assert data.extras["colors"].to_pylist()[0]["red"] == 10
    assert set(data.extras) == {"colors"}


def test_image_folder_photo_id_is_the_path_relative_to_the_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "beach.jpg").write_bytes(jpeg_bytes(1))
    (tmp_path / "sub" / "forest.JPEG").write_bytes(jpeg_bytes(2))
    (tmp_path / "notes.txt").write_text("not an image")
    data = read_source(tmp_path)
    assert data.kind == "folder"
    assert data.photos["photo_id"].to_pylist() == ["beach.jpg", "sub/forest.JPEG"]
    assert data.photos["photo_image_url"].to_pylist()[0].startswith("file://")


def test_missing_source_and_missing_photos_file_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_source(tmp_path / "nope.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(SourceError, match="no photos.tsv"):
        read_source(tmp_path / "empty.zip")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(SourceError, match="neither a photos.tsv"):
        read_source(empty)
