"""The image cache's layout: `<store>/images/<name>.jpg`, one file per photo_id.

The download stage writes it (:mod:`clipsql.download`, by atomic rename of a temporary file
named by :func:`temp_prefix` and :data:`TEMP_SUFFIX`); the refresh, search (crop of an
indexed photo), status (missing images) and the notebooks' views (:mod:`clipsql.render`)
read it. They all find a photo's file here, so none of them needs the download stage for it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

#: The cache's folder inside a store directory.
IMAGES_FOLDER = "images"
#: photo_ids that name their own cache file: letters, digits, '_', '-' and (not first) '.',
#: up to 200 characters (Unsplash ids are 11 of [A-Za-z0-9_-]).
PLAIN_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
#: Suffix of a file being written into the cache (it becomes an entry by an atomic rename).
TEMP_SUFFIX = ".tmp"


def images_dir(root: str | os.PathLike) -> Path:
    """The image cache of the store directory `root`: `<root>/images`."""
    return Path(root) / IMAGES_FOLDER


def image_path(image_dir: str | os.PathLike, photo_id: str) -> Path:
    """The cache file of a photo: `<image_dir>/<photo_id>.jpg` for a plain id (see
    :data:`PLAIN_ID_RE`); any other id (an image-folder path such as '2023/beach.jpg', a
    leading dot, spaces, non-ASCII) is named by its hash, `<image_dir>/~<first 32 hex digits
    of sha256(photo_id)>.jpg`, which no plain id can take (they never start with '~'). So
    every photo_id has a file of its own, always directly inside the cache."""
    name = photo_id if PLAIN_ID_RE.fullmatch(photo_id) else "~" + hashlib.sha256(photo_id.encode()).hexdigest()[:32]
    return Path(image_dir) / f"{name}.jpg"


def cached_image(image_dir: str | os.PathLike | None, photo_id: str) -> Path | None:
    """The cached image of `photo_id` if there is one, else None (any photo_id: its cache
    file is always inside `image_dir`, see :func:`image_path`)."""
    if image_dir is None or not isinstance(photo_id, str) or not photo_id:
        return None
    path = image_path(image_dir, photo_id)
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. a name the file system refuses
        return None


def cached_names(image_dir: str | os.PathLike) -> set[str]:
    """The file names in the cache (one directory listing; empty when there is no cache):
    `image_path(image_dir, photo_id).name in names` tells whether a photo is cached."""
    image_dir = Path(image_dir)
    return set(os.listdir(image_dir)) if image_dir.is_dir() else set()


def temp_prefix(target: Path) -> str:
    """The name prefix of a temporary file being written for the cache entry `target`
    (`.<stem>.`, with :data:`TEMP_SUFFIX`): a hidden name no entry has."""
    return f".{target.stem}."


def remove_stale_temp_files(image_dir: str | os.PathLike) -> int:
    """Remove the temporary files a killed run left in the cache (they never became cache
    entries: an image gets its name only by an atomic rename). Call it only while no other
    process downloads into `image_dir` (the refresh holds the store's lock).

    Returns:
        How many files were removed.
    """
    removed = 0
    for stale in Path(image_dir).glob(f".*{TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed
