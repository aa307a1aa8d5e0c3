"""Your own photos are filterable (issue 13, part 7): an image folder's photos get the width,
height, date taken, camera and GPS position their files hold, in the columns the Unsplash
release fills, so the same filters and the photo_search relation work on them."""

from __future__ import annotations

import datetime as dt

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from clipsql import refresh, search
from clipsql.db import open_store
from clipsql.images import photo_metadata


def _camera_jpeg(path, *, make: str, taken: str, offset: str, orientation: int = 1, size=(80, 60)) -> None:
    """A JPEG with EXIF as a camera writes it: make, model, date and offset taken, exposure, GPS."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = make, f"{make} model", orientation
    details = exif.get_ifd(0x8769)
    details[0x9003], details[0x9011], details[0x8827] = taken, offset, 400
    details[0x829D], details[0x920A], details[0x829A] = IFDRational(28, 10), IFDRational(50, 1), IFDRational(1, 250)
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (IFDRational(64, 1), IFDRational(8, 1), IFDRational(0, 1))
    gps[3], gps[4] = "W", (IFDRational(21, 1), IFDRational(56, 1), IFDRational(0, 1))
    Image.new("RGB", size, (200, 30, 30)).save(path, exif=exif)


def test_a_file_says_its_size_as_shown_date_taken_camera_and_place(tmp_path):
    _camera_jpeg(tmp_path / "a.jpg", make="Canon", taken="2023:07:14 18:30:05", offset="+02:00", orientation=6)
    found = photo_metadata(tmp_path / "a.jpg")
    assert (found["photo_width"], found["photo_height"]) == (60, 80)  # turned a quarter by its orientation
    assert found["photo_submitted_at"] == dt.datetime(2023, 7, 14, 16, 30, 5, tzinfo=dt.timezone.utc)
    assert (found["exif_camera_make"], found["exif_camera_model"]) == ("Canon", "Canon model")
    assert (found["exif_iso"], found["exif_aperture_value"], found["exif_focal_length"]) == (400, 2.8, 50.0)
    assert found["exif_exposure_time"] == "1/250"
    assert (found["photo_location_latitude"], found["photo_location_longitude"]) == (64.1333333, -21.9333333)
    # A date the stores cannot hold (a broken camera clock) is left out; the rest is kept.
    _camera_jpeg(tmp_path / "old.jpg", make="X" * 5000, taken="1066:10:14 09:00:00", offset="+00:00")
    old = photo_metadata(tmp_path / "old.jpg")
    assert "photo_submitted_at" not in old and old["exif_camera_make"] == "X" * 200 and old["photo_width"] == 80
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert photo_metadata(tmp_path / "junk.jpg") == {} and photo_metadata(tmp_path / "gone.jpg") == {}


def test_filters_and_photo_search_work_on_an_image_folder(tmp_path, tiny_clip):
    folder = tmp_path / "photos"
    folder.mkdir()
    _camera_jpeg(folder / "iceland.jpg", make="Canon", taken="2023:07:14 18:30:05", offset="+02:00", orientation=6)
    _camera_jpeg(folder / "tokyo.jpg", make="SONY", taken="2021:01:02 09:00:00", offset="+09:00")
    Image.new("RGB", (50, 50), (10, 200, 10)).save(folder / "plain.png")
    store = tmp_path / "store"
    refresh(folder, model=str(tiny_clip), store=store, progress=False)
    with open_store(store) as db:
        label = search.resolve_model(db)[0]

        def ids(**filters) -> list[str]:
            return sorted(search.text("a photo", 10, db=db, device="cpu", **filters)["photo_id"])

        assert ids() == ["iceland.jpg", "plain.png", "tokyo.jpg"]
        assert ids(camera_make="Canon") == ["iceland.jpg"]
        assert ids(orientation="portrait") == ["iceland.jpg"]
        assert ids(orientation="square") == ["plain.png"]
        assert ids(submitted_from=dt.date(2022, 1, 1)) == ["iceland.jpg"]
        assert ids(min_width=70) == ["tokyo.jpg"]
        rows = db.query_clickhouse(
            f"SELECT photo_id, width, height, camera_make FROM photo_search WHERE model = '{label}' ORDER BY photo_id"
        )
    assert rows.fillna("-").values.tolist() == [
        ["iceland.jpg", 60, 80, "Canon"],
        ["plain.png", 50, 50, "-"],
        ["tokyo.jpg", 80, 60, "SONY"],
    ]
