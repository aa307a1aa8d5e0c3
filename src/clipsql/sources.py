"""Source stage: read an Unsplash release (or a folder of images) into typed Arrow tables.

Public entry points: :func:`open_source` (streaming, a chunk of typed rows at a time: what the
refresh uses, so memory does not grow with the release) and :func:`read_source` (everything
in memory at once, for small sources).

An Unsplash release (format: ../shared/UNSPLASH.md, https://unsplash.com/data) is a set of
tab-separated files with a header row, each possibly split in numbered parts
(`photos.tsv000`, `photos.tsv001`, ...). It can be given as

- a zip of the release (a local path, or an http(s) URL downloaded once into the cache),
- a directory holding the `*.tsv000` parts,
- a single photos TSV file.

`photos` is required; `keywords`, `collections`, `colors` and `conversions` are read when
present. Fields are typed (timestamps, floats, ints, 't'/'f' booleans); an empty field is
NULL. Fields are never quoted in the Unsplash files, so a line is a row and line numbers in
error reports are physical line numbers. A row that cannot be typed is *malformed*: it is
skipped, counted and reported with its file and line, never dropped silently.

A directory without any `photos.tsv*` file is read as an *image folder*: every readable image
file under it (subfolders included) is a photo whose photo_id is its path relative to the
folder (:func:`folder_photo_id`); entries named like images that cannot be read (directories,
FIFOs, broken symlinks, symlink loops, unreadable files, names that are not UTF-8) are
listed in the reader's `skipped`.

A UTF-8 byte-order mark before a file's header is accepted (spreadsheet tools write one).
"""

from __future__ import annotations

import codecs
import dataclasses
import errno
import hashlib
import logging
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import BadArgument, SourceError
from .images import photo_metadata

log = logging.getLogger(__name__)

#: The Unsplash Lite release, latest version (a redirect to the zip; about 630 MB).
DEFAULT_SOURCE = "https://unsplash.com/data/lite/latest"

#: Column kinds of each Unsplash file, in the dataset's order (../shared/UNSPLASH.md).
#: Kinds: str, ts (timestamp, UTC), float, int, bool ('t'/'f').
UNSPLASH_COLUMNS: dict[str, dict[str, str]] = {
    "photos": {
        "photo_id": "str",
        "photo_url": "str",
        "photo_image_url": "str",
        "photo_submitted_at": "ts",
        "photo_featured": "bool",
        "photo_width": "int",
        "photo_height": "int",
        "photo_aspect_ratio": "float",
        "photo_description": "str",
        "photographer_username": "str",
        "photographer_first_name": "str",
        "photographer_last_name": "str",
        "exif_camera_make": "str",
        "exif_camera_model": "str",
        "exif_iso": "int",
        "exif_aperture_value": "float",
        "exif_focal_length": "float",
        "exif_exposure_time": "str",
        "photo_location_name": "str",
        "photo_location_latitude": "float",
        "photo_location_longitude": "float",
        "photo_location_country": "str",
        "photo_location_city": "str",
        "stats_views": "int",
        "stats_downloads": "int",
        "ai_description": "str",
        "ai_primary_landmark_name": "str",
        "ai_primary_landmark_latitude": "float",
        "ai_primary_landmark_longitude": "float",
        "ai_primary_landmark_confidence": "float",
    },
    "keywords": {
        "photo_id": "str",
        "keyword": "str",
        "ai_service_1_confidence": "float",
        "ai_service_2_confidence": "float",
        "suggested_by_user": "bool",
    },
    "collections": {
        "photo_id": "str",
        "collection_id": "str",
        "collection_title": "str",
        "photo_collected_at": "ts",
    },
    "colors": {
        "photo_id": "str",
        "hex": "str",
        "red": "int",
        "green": "int",
        "blue": "int",
        "keyword": "str",
        "coverage": "float",
        "score": "float",
    },
    "conversions": {
        "converted_at": "ts",
        "conversion_type": "str",
        "keyword": "str",
        "photo_id": "str",
        "anonymous_user_id": "str",
        "conversion_country": "str",
    },
}
OPTIONAL_FILES = ("keywords", "collections", "colors", "conversions")
#: Columns of each file that form its key in the store and so may not be empty.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "photos": ("photo_id",),
    "keywords": ("photo_id", "keyword"),
    "collections": ("photo_id", "collection_id"),
    "colors": ("photo_id", "hex"),
    "conversions": (
        "photo_id",
        "converted_at",
        "conversion_type",
        "keyword",
        "anonymous_user_id",
        "conversion_country",
    ),
}
#: Key columns that may be empty in the source: empty means '' there, not NULL.
EMPTY_KEY_OK = {
    ("conversions", "keyword"),
    ("conversions", "anonymous_user_id"),
    ("conversions", "conversion_country"),
    ("conversions", "conversion_type"),
}

_ARROW_TYPES = {
    "str": pa.string(),
    "ts": pa.timestamp("ms", tz="UTC"),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
}
_BOOLS = {"t": True, "f": False, "true": True, "false": False}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
#: A photo_id names a cache file, so it may not hold path separators or start with a dot.
_PHOTO_ID_RE = re.compile(r"^[^./\\\x00][^/\\\x00]{0,199}$")
_PART_RE = re.compile(r"^(?P<name>[a-z_]+)\.(?:tsv|csv)(?P<part>\d*)$")


def arrow_schema(file: str) -> pa.Schema:
    """The Arrow schema of one Unsplash file (`photos`, `keywords`, ...)."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in UNSPLASH_COLUMNS[file].items()])


@dataclasses.dataclass(frozen=True)
class MalformedRow:
    """A source row that was skipped: `file` (name of the part), 1-based `line`, `reason`."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclasses.dataclass
class SourceData:
    """What a source holds, typed.

    Attributes:
        kind: 'unsplash' or 'folder'.
        location: the source as given (path or URL).
        version: a string that changes when the source's content changes (file names,
            sizes and modification times; the URL for a download).
        photos: one row per photo, schema :func:`arrow_schema('photos')`, photo_id unique.
        extras: the optional files that were present, by name ('keywords', ...), each
            limited to the photos in `photos`.
        malformed: every skipped row with its file, line and reason.
    """

    kind: str
    location: str
    version: str
    photos: pa.Table
    extras: dict[str, pa.Table]
    malformed: list[MalformedRow]


#: Rows typed and handed on at a time by :class:`SourceReader` (photos use the caller's size).
DEFAULT_EXTRA_CHUNK_ROWS = 100_000


class SourceReader:
    """A source opened for streaming: typed Arrow tables a chunk at a time.

    Memory stays bounded by the chunk size, not by the size of the release (the Lite
    release's conversions file alone holds millions of rows). Only the photo_ids seen so
    far are kept, to report duplicates.

    Attributes:
        kind: 'unsplash' or 'folder'.
        location: the source as given (path or URL).
        version: a string that changes when the source's content changes (file names,
            sizes and modification times; the URL for a download).
        extra_files: the optional files present ('keywords', ...), in reading order.
        malformed: every skipped row so far, with its file, line and reason.
        limit: only the first `limit` photos are read (None: all).
        skipped: image-folder entries named like images that could not be read.
    """

    def __init__(
        self,
        kind: str,
        location: str,
        version: str,
        members: dict[str, list] | None,
        folder_photos: pa.Table | None,
        malformed: list[MalformedRow],
        limit: int | None,
        skipped: list[SkippedEntry] | None = None,
    ):
        self.kind = kind
        self.skipped = skipped or []
        self.location = location
        self.version = version
        self.limit = limit
        self.malformed = malformed
        self._members = members or {}
        self._folder_photos = folder_photos
        self.extra_files = [name for name in OPTIONAL_FILES if name in self._members]

    def photo_batches(self, rows: int) -> Iterator[pa.Table]:
        """Typed photos tables of at most `rows` rows (schema :func:`arrow_schema('photos')`),
        in file order, photo_id unique across batches; malformed rows go to `malformed`.

        Raises:
            BadArgument: rows < 1.
            SourceError: a file lacks a `photo_id` column or parts disagree on the header.
        """
        if rows < 1:
            raise BadArgument(f"rows must be >= 1, got {rows}")
        if self._folder_photos is not None:
            for start in range(0, self._folder_photos.num_rows, rows):
                yield self._folder_photos.slice(start, rows)
            return
        yield from _iter_file(
            "photos", self._members["photos"], self.malformed, chunk_rows=rows, limit=self.limit, unique_key=True
        )

    def photo_keys(self, malformed: list[MalformedRow] | None = None, rows: int = DEFAULT_EXTRA_CHUNK_ROWS) -> pa.Table:
        """photo_id and photo_image_url of every photo a full read hands on (`limit`
        applied), in file order: a first pass that lets the refresh compare the source with
        the store before it writes anything. Malformed rows go to `malformed` (default:
        dropped), not to :attr:`malformed`, which the streaming read fills.

        Raises:
            SourceError: as :meth:`photo_batches`.
        """
        columns = ["photo_id", "photo_image_url"]
        if self._folder_photos is not None:
            return self._folder_photos.select(columns)
        tables = [
            t.select(columns)
            for t in _iter_file(
                "photos",
                self._members["photos"],
                [] if malformed is None else malformed,
                chunk_rows=rows,
                limit=self.limit,
                unique_key=True,
            )
        ]
        return pa.concat_tables(tables)

    def extra_batches(
        self, keep: set[str] | None = None, rows: int = DEFAULT_EXTRA_CHUNK_ROWS
    ) -> Iterator[tuple[str, pa.Table]]:
        """(file name, typed table of at most `rows` rows) for each optional file present.

        Args:
            keep: only rows of these photo_ids (None: every row).
            rows: rows typed at a time.
        """
        value_set = pa.array(sorted(keep), pa.string()) if keep is not None else None
        for name in self.extra_files:
            for table in _iter_file(name, self._members[name], self.malformed, chunk_rows=rows):
                if value_set is not None:
                    table = table.filter(pc.is_in(table["photo_id"], value_set=value_set))
                yield name, table


def open_source(
    source: str | os.PathLike, *, limit: int | None = None, cache_dir: str | os.PathLike | None = None
) -> SourceReader:
    """Open a release zip, a URL of one, a directory of TSV parts, a photos TSV or an image
    folder for streaming (see :class:`SourceReader`); nothing but file names and sizes is
    read yet (an image folder is listed).

    Args:
        source: path or http(s) URL (see the module docstring for the accepted forms).
        limit: keep only the first `limit` photos (in file order); None keeps all.
        cache_dir: where a URL's zip is downloaded to (once; reused while it exists).

    Raises:
        BadArgument: `limit` is not a positive integer.
        SourceError: the source does not exist or has no photos file.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadArgument(f"limit must be a positive integer, got {limit!r}")
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        from .download import fetch_to_cache

        if cache_dir is None:
            raise BadArgument("a source URL needs cache_dir to download the release into")
        zip_path = fetch_to_cache(text, Path(cache_dir) / "sources")
        return SourceReader("unsplash", text, text, _zip_members(zip_path), None, [], limit)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"source {text!r} does not exist")
    if path.is_file() and zipfile.is_zipfile(path):
        members = _zip_members(path)
    elif path.is_file():
        members = {"photos": [_FilePart(path.name, path)]}
    else:
        members = _dir_members(path)
        if "photos" not in members:
            return _read_image_folder(path, limit)
    return SourceReader("unsplash", text, _version_of(members), members, None, [], limit)


def read_source(
    source: str | os.PathLike, *, limit: int | None = None, cache_dir: str | os.PathLike | None = None
) -> SourceData:
    """Read a whole source into memory (see :func:`open_source` for the arguments).

    For a release of bounded size (tests, notebooks); the refresh streams with
    :func:`open_source` instead.

    Returns:
        SourceData with typed tables and the malformed rows.

    Raises:
        BadArgument: `limit` is not a positive integer.
        SourceError: the source does not exist, has no photos file, or a file lacks a
            `photo_id` column.
    """
    reader = open_source(source, limit=limit, cache_dir=cache_dir)
    photos = pa.concat_tables(list(reader.photo_batches(DEFAULT_EXTRA_CHUNK_ROWS)))
    keep = set(photos["photo_id"].to_pylist()) if limit is not None else None
    parts: dict[str, list[pa.Table]] = {}
    for name, table in reader.extra_batches(keep):
        parts.setdefault(name, []).append(table)
    extras = {name: pa.concat_tables(tables) for name, tables in parts.items()}
    if reader.malformed:
        log.warning("%d malformed source rows skipped; first: %s", len(reader.malformed), reader.malformed[0])
    return SourceData(reader.kind, reader.location, reader.version, photos, extras, reader.malformed)


# --- parts of a release ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FilePart:
    name: str
    path: Path

    def open(self) -> IO[bytes]:
        return open(self.path, "rb")

    def stamp(self) -> str:
        st = self.path.stat()
        return f"{self.name}:{st.st_size}:{int(st.st_mtime)}"


@dataclasses.dataclass(frozen=True)
class _ZipPart:
    name: str
    zip_path: Path
    member: str

    def open(self) -> IO[bytes]:
        return zipfile.ZipFile(self.zip_path).open(self.member)

    def stamp(self) -> str:
        info = zipfile.ZipFile(self.zip_path).getinfo(self.member)
        return f"{self.name}:{info.file_size}:{info.CRC}"


def _group_parts(names: Iterable[tuple[str, object]]) -> dict[str, list]:
    groups: dict[str, list[tuple[str, object]]] = {}
    for base, part in names:
        m = _PART_RE.match(base)
        if m and m["name"] in UNSPLASH_COLUMNS:
            groups.setdefault(m["name"], []).append((base, part))
    return {name: [p for _, p in sorted(parts, key=lambda x: x[0])] for name, parts in groups.items()}


def _zip_members(zip_path: Path) -> dict[str, list]:
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist() if not n.endswith("/") and "__MACOSX" not in n]
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{zip_path} is not a readable zip: {exc}") from exc
    groups = _group_parts((Path(n).name, _ZipPart(Path(n).name, zip_path, n)) for n in names)
    if "photos" not in groups:
        raise SourceError(f"{zip_path} holds no photos.tsv* file")
    return groups


def _dir_members(path: Path) -> dict[str, list]:
    return _group_parts((p.name, _FilePart(p.name, p)) for p in path.iterdir() if p.is_file())


def _version_of(members: dict[str, list]) -> str:
    stamps = ",".join(part.stamp() for parts in members.values() for part in parts)
    return hashlib.sha256(stamps.encode()).hexdigest()[:16]


# --- reading and typing ------------------------------------------------------------------


def _iter_lines(part) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when not UTF-8, raw bytes) of each line."""
    decoder = codecs.getincrementaldecoder("utf-8")
    with part.open() as raw:
        for number, line in enumerate(raw, 1):
            line = line.rstrip(b"\r\n")
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                yield number, decoder().decode(line, final=True), line
            except UnicodeDecodeError:
                yield number, None, line


def _iter_file(
    file: str,
    parts: list,
    malformed: list[MalformedRow],
    *,
    chunk_rows: int,
    limit: int | None = None,
    unique_key: bool = False,
) -> Iterator[pa.Table]:
    """Typed tables of one Unsplash file, at most `chunk_rows` rows each (see module docstring).

    At least one table is yielded (an empty one for a file without rows), so callers can
    concatenate. With `limit`, reading stops once `limit` good rows were handed on.
    """
    kinds = UNSPLASH_COLUMNS[file]
    rows: list[list[str]] = []
    where: list[tuple[str, int]] = []
    header: list[str] | None = None
    seen: dict[str, tuple[str, int]] = {}
    state = {"kept": 0, "yielded": False, "logged_unknown": False}

    def flush() -> pa.Table:
        table = _typed_table(file, header or list(kinds), rows, where, malformed, unique_key, state)
        rows.clear()
        where.clear()
        if limit is not None:
            table = table.slice(0, limit - state["kept"])
        state["kept"] += table.num_rows
        state["yielded"] = True
        return table

    for part in parts:
        part_header = None
        for number, text, _ in _iter_lines(part):
            if text is None:
                malformed.append(MalformedRow(part.name, number, "not valid UTF-8"))
                continue
            if part_header is None:
                part_header = text.split("\t")
                if "photo_id" not in part_header:
                    raise SourceError(f"{part.name}: header has no photo_id column: {text[:200]!r}")
                if header is None:
                    header = part_header
                elif part_header != header:
                    raise SourceError(f"{part.name}: header differs from {parts[0].name}'s")
                continue
            if not text:
                continue
            if header is None:  # a data line before any header: the first line of a part is its header
                raise SourceError(f"{part.name}: line {number} comes before the header")
            fields = text.split("\t")
            if len(fields) != len(header):
                malformed.append(
                    MalformedRow(part.name, number, f"expected {len(header)} tab-separated fields, got {len(fields)}")
                )
                continue
            if unique_key:
                photo_id = fields[header.index("photo_id")]
                if photo_id in seen:
                    first = seen[photo_id]
                    malformed.append(
                        MalformedRow(
                            part.name, number, f"duplicate photo_id {photo_id!r} (first at {first[0]}:{first[1]})"
                        )
                    )
                    continue
                seen[photo_id] = (part.name, number)
            rows.append(fields)
            where.append((part.name, number))
            if len(rows) >= chunk_rows:
                yield flush()
                if limit is not None and state["kept"] >= limit:
                    return
    if rows or not state["yielded"]:
        yield flush()


def _typed_table(
    file: str,
    header: list[str],
    rows: list[list[str]],
    where: list[tuple[str, int]],
    malformed: list[MalformedRow],
    unique_key: bool,
    state: dict,
) -> pa.Table:
    """Type the string rows of one chunk; rows that cannot be typed go to `malformed`."""
    kinds = UNSPLASH_COLUMNS[file]
    unknown = [c for c in header if c not in kinds]
    if unknown and not state["logged_unknown"]:
        log.info("%s: ignoring columns not in the Unsplash format: %s", file, ", ".join(unknown))
        state["logged_unknown"] = True
    columns = {name: [r[i] for r in rows] for i, name in enumerate(header) if name in kinds}
    typed, bad = _type_columns(file, columns, len(rows))
    for index in np.flatnonzero(bad.any(axis=0)) if bad.size else []:
        reasons = [
            f"{name}: {columns[name][index]!r} is not {_KIND_WORDS[kinds[name]]}"
            for name, mask in zip(typed, bad)
            if mask[index]
        ]
        malformed.append(MalformedRow(where[index][0], where[index][1], "; ".join(reasons)))
    ok = ~bad.any(axis=0) if bad.size else np.ones(len(rows), dtype=bool)
    keep_mask = pa.array(ok)
    table = pa.table(
        {name: _as_arrow(values, _ARROW_TYPES[kinds[name]]).filter(keep_mask) for name, values in typed.items()}
    )
    missing = [n for n in kinds if n not in table.column_names]
    for name in missing:
        table = table.append_column(name, pa.nulls(table.num_rows, _ARROW_TYPES[kinds[name]]))
    table = table.select(list(kinds)).cast(arrow_schema(file))
    if file == "photos" or unique_key:
        ids = table["photo_id"].to_pylist()
        bad_ids = [i for i, pid in enumerate(ids) if pid is None or not _PHOTO_ID_RE.match(pid)]
        if bad_ids:
            ok_rows = np.flatnonzero(ok)
            for i in bad_ids:
                file_name, line = where[ok_rows[i]]
                malformed.append(MalformedRow(file_name, line, f"photo_id {ids[i]!r} is empty or not a valid id"))
            keep = np.ones(table.num_rows, dtype=bool)
            keep[bad_ids] = False
            table = table.filter(pa.array(keep))
    return table


def _as_arrow(values, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array):
        return values.cast(type_)
    return pa.array(values, type=type_)


_KIND_WORDS = {
    "ts": "a timestamp",
    "float": "a number",
    "int": "an integer",
    "bool": "'t' or 'f'",
    "str": "non-empty text",
}


def _type_columns(file: str, columns: dict[str, list[str]], n: int):
    """Convert string columns to their kinds; returns (typed columns, bad mask (ncols, n))."""
    import pandas as pd  # here, not at the top: settings imports this module, and a search loads no pandas

    kinds = UNSPLASH_COLUMNS[file]
    typed: dict[str, object] = {}
    bad_masks = []
    for name, values in columns.items():
        kind = kinds[name]
        series = pd.Series(values, dtype=object)
        empty = series.eq("").to_numpy(dtype=bool) if n else np.zeros(0, dtype=bool)
        if kind == "str":
            keep_empty = (file, name) in EMPTY_KEY_OK
            typed[name] = [None if v == "" and not keep_empty else v for v in values]
            bad = np.zeros(n, dtype=bool)
        elif kind in ("int", "float"):
            numbers = pd.to_numeric(series.where(~empty, None), errors="coerce").astype("float64")
            bad = ~empty & numbers.isna().to_numpy()
            if kind == "int":
                arr = numbers.to_numpy()
                bad |= ~np.isnan(arr) & (arr != np.floor(arr))
            numbers[bad] = np.nan
            typed[name] = pa.array(numbers.astype("Int64") if kind == "int" else numbers, from_pandas=True)
        elif kind == "bool":
            mapped = series.str.lower().map(_BOOLS)
            bad = ~empty & mapped.isna().to_numpy()
            typed[name] = [None if (e or b) else bool(v) for v, e, b in zip(mapped, empty, bad)]
        elif kind == "ts":
            stamps = pd.to_datetime(series.where(~empty, None), errors="coerce", utc=True, format="ISO8601")
            bad = ~empty & stamps.isna().to_numpy()
            typed[name] = pa.array(stamps, type=pa.timestamp("ns", tz="UTC")).cast(
                pa.timestamp("ms", tz="UTC"), safe=False
            )
        else:  # pragma: no cover - the kinds are a fixed list above
            raise AssertionError(kind)
        if name in KEY_COLUMNS[file] and (file, name) not in EMPTY_KEY_OK:
            bad = bad | empty
        bad_masks.append(bad)
    return typed, (np.vstack(bad_masks) if bad_masks and n else np.zeros((0, n), dtype=bool))


# --- image folders -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SkippedEntry:
    """A folder entry named like an image that is not read: `path` relative to the folder
    (POSIX separators), `reason` in words (a directory, a FIFO, a broken symlink, ...)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def folder_photo_id(relative_path: str) -> str:
    """The photo_id of an image-folder file: its path relative to the folder, with POSIX
    separators and its extension, e.g. 'beach.jpg' or '2023/iceland/beach.jpg'.

    Unique within a folder and stable across runs as long as the file keeps its place.
    (Before clipsql 0.2 it was the file stem, which two files in different subfolders could
    share; a refresh renames such stored photos to their new ids, see clipsql.refresh.)
    """
    return relative_path


def _entry_problem(path: Path) -> str | None:
    """Why an image-named folder entry cannot be read, or None when it is a readable file."""
    try:
        st = path.stat()  # follows symlinks
    except OSError as exc:
        if path.is_symlink():
            return "a symlink loop" if exc.errno == errno.ELOOP else f"a broken symlink ({exc.strerror or exc})"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not an image file"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        return f"{kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _walk_image_folder(root: Path) -> tuple[list[tuple[str, Path]], list[SkippedEntry]]:
    """(relative POSIX path, path) of every readable image file under `root`, sorted, and the
    image-named entries that were skipped. Symlinked folders are followed once each (a loop
    is reported, not walked forever)."""
    files: list[tuple[str, Path]] = []
    skipped: list[SkippedEntry] = []
    visited: set[tuple[int, int]] = set()

    def walk(folder: Path, rel: str) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            skipped.append(SkippedEntry(rel or ".", f"folder cannot be read ({exc.strerror or exc})"))
            return
        if (st.st_dev, st.st_ino) in visited:
            skipped.append(SkippedEntry(rel, "a symlink loop (folder already walked)"))
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedEntry(rel or ".", f"folder cannot be listed ({exc.strerror or exc})"))
            return
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            path = Path(entry.path)
            is_image_name = path.suffix.lower() in IMAGE_SUFFIXES
            try:
                is_dir = entry.is_dir()  # follows symlinks; False for loops and broken links
            except OSError:
                is_dir = False
            if is_dir and not is_image_name:
                walk(path, entry_rel)
                continue
            if not is_image_name:
                continue
            problem = _entry_problem(path)
            if problem is None:
                files.append((entry_rel, path))
            else:
                skipped.append(SkippedEntry(entry_rel, problem))

    walk(root, "")
    return files, skipped


#: The photos columns an image-folder photo fills from its own file (clipsql.images.photo_metadata).
FOLDER_METADATA_COLUMNS = (
    "photo_width",
    "photo_height",
    "photo_aspect_ratio",
    "photo_submitted_at",
    "exif_camera_make",
    "exif_camera_model",
    "exif_iso",
    "exif_aperture_value",
    "exif_focal_length",
    "exif_exposure_time",
    "photo_location_latitude",
    "photo_location_longitude",
)


def _read_image_folder(path: Path, limit: int | None) -> SourceReader:
    files, skipped = _walk_image_folder(path)
    malformed: list[MalformedRow] = []
    ids, urls, stamps = [], [], []
    metadata: list[dict] = []
    for rel, file in files:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(
                SkippedEntry(
                    rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), "file name is not valid UTF-8"
                )
            )
            continue
        ids.append(folder_photo_id(rel))
        urls.append(file.absolute().as_uri())
        metadata.append(photo_metadata(file))  # the file's own size, date, camera and place
        st = file.stat()
        stamps.append(f"{rel}:{st.st_size}:{int(st.st_mtime)}")
        if limit is not None and len(ids) >= limit:
            break
    for entry in skipped:
        log.warning("image folder %s: skipped %s", path, entry)
    if not ids:
        detail = f"; skipped: {', '.join(map(str, skipped[:5]))}" if skipped else ""
        raise SourceError(
            f"{path} holds neither a photos.tsv* file nor any readable image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}){detail}"
        )
    n = len(ids)
    schema = arrow_schema("photos")
    photos = pa.table({f.name: pa.nulls(n, f.type) for f in schema}, schema=schema)
    photos = photos.set_column(0, "photo_id", pa.array(ids, pa.string()))
    photos = photos.set_column(2, "photo_image_url", pa.array(urls, pa.string()))
    for column in FOLDER_METADATA_COLUMNS:
        index = schema.get_field_index(column)
        values = pa.array([m.get(column) for m in metadata], schema.field(column).type)
        photos = photos.set_column(index, column, values)
    version = hashlib.sha256(",".join(stamps).encode()).hexdigest()[:16]
    return SourceReader("folder", str(path), version, None, photos, malformed, limit, skipped)
