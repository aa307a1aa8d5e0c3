"""The settings of a refresh as one typed tree, which the job file, the `clipsql refresh`
command line and :func:`clipsql.refresh.refresh` all map onto.

Public entry points: :class:`Settings` (the tree: :meth:`Settings.from_toml`,
:meth:`Settings.load`, :meth:`Settings.override`, :meth:`Settings.download_options`,
:meth:`Settings.refresh_arguments`), :func:`read_job_file` and :data:`LEAVES` (every
setting in each of its forms, as :class:`Setting` records).

The tree mirrors the job file's tables one to one::

    Settings.source    [source]    location, limit
    Settings.model     [model]     name, label, device, batch_size, precision
    Settings.store     [store]     path, clickhouse_url, duckdb          (one backend)
    Settings.download  [download]  workers, width, timeout_s, retries, max_bytes, max_retry_after_s,
                                   connect_timeout_s, total_timeout_s, backoff_s, max_pixels
    Settings.refresh   [refresh]   chunk_size, retry_failed, retry_backoff_s, purge, max_delete_fraction,
                                   shard, finish, executor

Each field is declared once, here: its type, its default (read from the constant of the
module that owns it, never restated), its command-line option with metavar and help text
(the help's "(default X)" is generated from the default), and the name it has in the API
below (a :class:`~clipsql.download.DownloadOptions` attribute for [download], else a
keyword argument of :func:`~clipsql.refresh.refresh`). So `[download] timeout_s` is
`--timeout` on the command line and `DownloadOptions.read_timeout_s` in the API, and
`clipsql.cli` builds the refresh command's options by walking :data:`LEAVES`.

Relative paths in a job file (source location, store path, DuckDB file, and a model given
as './dir' or '../dir') are relative to the job file's folder, so a schedule works from any
working directory. An unknown table or key, or a value of the wrong type, is refused with
the file and `[table] key` named.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .constants import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_EXECUTOR,
    DEFAULT_MAX_DELETE_FRACTION,
    DEFAULT_MODEL,
    DEFAULT_RETRY_BACKOFF_S,
)
from .download_options import DownloadOptions
from .engines import absolute_store
from .errors import BadArgument
from .sources import DEFAULT_SOURCE

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

#: The download stage's defaults: the [download] table's defaults are read from it.
_DOWNLOAD = DownloadOptions()


def _setting(
    default: Any,
    option: str,
    help: str,
    *,
    metavar: str | None = None,
    default_text: str | None = None,
    to: str | None = None,
    relative: str | None = None,
    backend: bool = False,
) -> Any:
    """A field of the tree: its `default` and its other forms (see :class:`Setting`, whose
    attributes these arguments become)."""
    return dataclasses.field(
        default=default,
        metadata={
            "option": option,
            "help": help,
            "metavar": metavar,
            "default_text": default_text,
            "to": to,
            "relative": relative,
            "backend": backend,
        },
    )


@dataclasses.dataclass(frozen=True)
class SourceSettings:
    """The photos to index (the [source] table of a job file)."""

    location: str = _setting(
        DEFAULT_SOURCE,
        "--source",
        "Unsplash release zip, its URL, a folder of *.tsv000 parts, a photos TSV, or an image folder",
        to="source",
        relative="path",
    )
    limit: int | None = _setting(
        None, "--limit", "only the first N photos of the source (then none is flagged deleted)"
    )


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The CLIP model that embeds the photos (the [model] table)."""

    name: str = _setting(
        DEFAULT_MODEL, "--model", "CLIP hub name or local checkpoint directory", to="model", relative="model"
    )
    label: str | None = _setting(
        None,
        "--model-name",
        "label stored with the vectors",
        default_text="the hub name or the directory's name",
        to="model_name",
    )
    device: str = _setting(DEFAULT_DEVICE, "--device", "auto, cpu, cuda[:N] or mps")
    batch_size: int | None = _setting(
        None,
        "--batch-size",
        "images per model forward pass",
        default_text="chosen for the device: 32 on a CPU, 256 on a GPU of 16 GiB or more",
    )
    precision: str = _setting(
        "fp32",
        "--precision",
        "fp32, bf16, fp16, int8 or auto: what the image tower runs at (auto: the fastest the device "
        "has that keeps the cosine to fp32 >= 0.999 on your first photos; docs/models.md#precision)",
    )


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """Where the photos go: one store URL or directory (default: chdb on disk under --store) and
    the image cache (the [store] table). `clickhouse_url` and `duckdb` are the first wave's
    aliases; `path` is then the image cache directory (see :mod:`clipsql.engines`)."""

    path: str | None = _setting(
        None,
        "--store",
        "the store: a directory (chdb data and the image cache) or a URL: "
        "chdb:///dir, http(s)://user:password@host:8123/database, duckdb:///file.duckdb",
        metavar="URL|DIR",
        default_text="$CLIPSQL_STORE or ./clipsql-store",
        to="store",
        relative="path",
    )
    clickhouse_url: str | None = _setting(
        None,
        "--clickhouse-url",
        "alias: a ClickHouse server, http(s)://user:password@host:8123/database (--store is then the image cache)",
        default_text="$CLICKHOUSE_URL",
        backend=True,
    )
    duckdb: str | None = _setting(
        None,
        "--duckdb",
        "alias: a DuckDB database file (--store is then the image cache)",
        metavar="FILE",
        relative="path",
        backend=True,
    )
    wait_s: float | None = _setting(
        None,
        "--wait",
        "seconds to wait for a store another process holds (a notebook, a search, a refresh between "
        "its writes); 0 fails at once (exit 75)",
        metavar="SECONDS",
        default_text="$CLIPSQL_WAIT or 300",
        to="wait_s",
    )


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """Fetching the images (the [download] table: the fields of :class:`~clipsql.download.DownloadOptions`)."""

    workers: int = _setting(_DOWNLOAD.workers, "--workers", "concurrent downloads")
    width: int = _setting(
        _DOWNLOAD.width, "--width", "Unsplash dynamic-URL width in pixels (w=); 0 keeps URLs as given"
    )
    timeout_s: float = _setting(
        _DOWNLOAD.read_timeout_s, "--timeout", "read timeout per request, seconds", to="read_timeout_s"
    )
    retries: int = _setting(
        _DOWNLOAD.retries, "--retries", "retries per request within a run, for 429, 5xx and connection errors"
    )
    max_bytes: int = _setting(_DOWNLOAD.max_bytes, "--max-bytes", "largest image accepted, bytes")
    max_retry_after_s: float = _setting(
        _DOWNLOAD.max_retry_after_s,
        "--max-retry-after",
        "longest Retry-After a server may ask for before the photo fails transient, seconds",
        metavar="SECONDS",
    )
    connect_timeout_s: float = _setting(
        _DOWNLOAD.connect_timeout_s, "--connect-timeout", "connect timeout per request, seconds", metavar="SECONDS"
    )
    total_timeout_s: float = _setting(
        _DOWNLOAD.total_timeout_s,
        "--total-timeout",
        "deadline of one attempt at a photo, headers and body, seconds",
        metavar="SECONDS",
    )
    backoff_s: float = _setting(
        _DOWNLOAD.backoff_s, "--backoff", "base of the backoff between retries within a run, seconds", metavar="SECONDS"
    )
    max_pixels: int = _setting(_DOWNLOAD.max_pixels, "--max-pixels", "largest image accepted, width x height pixels")


@dataclasses.dataclass(frozen=True)
class RefreshSettings:
    """How a run proceeds: chunks, retries of failed photos, photos gone from the source (the
    [refresh] table)."""

    chunk_size: int = _setting(DEFAULT_CHUNK_SIZE, "--chunk-size", "photos downloaded, embedded and loaded at a time")
    retry_failed: bool = _setting(
        False, "--retry-failed", "retry every failed photo now, permanent failures (HTTP 4xx, undecodable) included"
    )
    retry_backoff_s: float = _setting(
        DEFAULT_RETRY_BACKOFF_S,
        "--retry-backoff",
        "a transient failure is retried by a later run once last attempt + SECONDS * 2^(attempts-1) has passed",
        metavar="SECONDS",
    )
    purge: bool = _setting(
        False,
        "--purge",
        "remove photos gone from the source from every table and the image cache, instead of flagging them deleted",
    )
    max_delete_fraction: float = _setting(
        DEFAULT_MAX_DELETE_FRACTION,
        "--max-delete-fraction",
        "stop before any write when the run would flag or purge more than this share of the store's photos",
    )
    shard: str | None = _setting(
        None,
        "--shard",
        "refresh only the photos with cityHash64(photo_id) % N = I, one of N scheduler tasks; the "
        "final steps (optional files, deletions, model completion, vector index) are left to --finish",
        metavar="I/N",
        default_text="all photos",
    )
    finish: bool = _setting(
        False,
        "--finish",
        "the final step after every --shard run: metadata, optional files, photos gone from the source, "
        "model completion and vector index, without downloading or embedding",
    )
    executor: str = _setting(
        DEFAULT_EXECUTOR,
        "--executor",
        "where downloads and embeddings run: local, ray (a local Ray instance, or $RAY_ADDRESS) or "
        "ray://host:port (a running Ray cluster); ray needs pip install 'clipsql[ray]'",
        metavar="local|ray|ray://ADDRESS",
    )


@dataclasses.dataclass(frozen=True)
class Setting:
    """One leaf of the tree in each of its forms.

    Attributes:
        table / key: where it sits in a job file (`[download] timeout_s`) and in the tree
            (`Settings().download.timeout_s`).
        kind: str, int, float or bool; `optional`: None is a value too (no limit, no label).
        default: the value when neither the job file nor the command line gives one.
        option: the `clipsql refresh` option (`--timeout`; a bool is also `--no-...`).
        dest: the option's argparse dest, also the setting's flat name (:meth:`Settings.flat`,
            the keyword arguments of :meth:`Settings.override` and :func:`clipsql.jobs.run_job`).
        help / metavar / default_text: the option's help, without its "(default X)"; the
            metavar (None: argparse's); what "(default X)" says instead of the default.
        to: its name in the API below: a DownloadOptions attribute for [download], else a
            keyword argument of :func:`clipsql.refresh.refresh`.
        relative: 'path' (resolved against the job file's folder unless a URL or ':memory:'),
            'model' (resolved when it starts with './' or '../') or None.
        backend: one of the mutually exclusive backends (clickhouse_url, duckdb).
    """

    table: str
    key: str
    kind: type
    optional: bool
    default: Any
    option: str
    dest: str
    help: str
    metavar: str | None
    default_text: str | None
    to: str
    relative: str | None
    backend: bool

    @property
    def name(self) -> str:
        """`[table] key`, as messages name it."""
        return f"[{self.table}] {self.key}"

    def help_text(self) -> str:
        """The option's help: its text and "(default X)", X the default (floats as 60, 0.1;
        bools as on/off) or `default_text`; ready for argparse ('%' escaped)."""
        shown: str | None = None
        if self.default_text is not None:
            shown = self.default_text
        elif isinstance(self.default, bool):
            shown = "on" if self.default else "off"
        elif isinstance(self.default, float):
            shown = f"{self.default:g}"
        elif self.default is not None:
            shown = str(self.default)
        text = self.help if shown is None else f"{self.help} (default {shown})"
        return text.replace("%", "%%")

    def accepts(self, value: Any) -> bool:
        """Whether `value`, read from a job file, has this setting's type (an int is a float
        too; a bool is no int)."""
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, self.kind)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of a refresh: one table of the job file per field.

    Frozen: :meth:`override` and :meth:`load` return new trees. Values are not range-checked
    here; :func:`clipsql.refresh.refresh` and :meth:`DownloadOptions.validate` do that.
    """

    source: SourceSettings = dataclasses.field(default_factory=SourceSettings)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    store: StoreSettings = dataclasses.field(default_factory=StoreSettings)
    # The [download] table is one argument of refresh(), a DownloadOptions, not one per key.
    download: DownloadSettings = dataclasses.field(default_factory=DownloadSettings, metadata={"to": "download"})
    refresh: RefreshSettings = dataclasses.field(default_factory=RefreshSettings)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> Settings:
        """The defaults, then the settings a job file gives (see :func:`read_job_file`).

        Raises:
            BadArgument: what :func:`read_job_file` raises.
        """
        return cls()._with({_BY_KEY[k]: v for k, v in read_job_file(path).items()})

    @classmethod
    def load(cls, job: str | os.PathLike | None = None, **overrides: Any) -> Settings:
        """The defaults, then the job file's settings (none when `job` is None), then
        `overrides` by flat name (:attr:`Setting.dest`) that are not None, as
        :meth:`override`: what `clipsql refresh [JOB] [options]` runs with.

        Raises:
            BadArgument: see :func:`read_job_file` and :meth:`override`.
        """
        unknown_overrides(overrides)  # before the file is read: a typo is the first thing to fix
        tree = cls.from_toml(job) if job is not None else cls()
        return tree.override(**overrides)

    def override(self, **values: Any) -> Settings:
        """This tree with `values` (by flat name, e.g. timeout=5.0) that are not None; a
        backend among them (clickhouse_url or duckdb) replaces this tree's backend.

        Raises:
            BadArgument: an unknown name.
        """
        unknown_overrides(values)
        given = {_BY_DEST[name]: value for name, value in values.items() if value is not None}
        if any(leaf.backend and value for leaf, value in given.items()):
            given = {**{leaf: None for leaf in LEAVES if leaf.backend}, **given}
        return self._with(given)

    def _with(self, values: Mapping[Setting, Any]) -> Settings:
        tables: dict[str, dict[str, Any]] = {}
        for leaf, value in values.items():
            tables.setdefault(leaf.table, {})[leaf.key] = value
        return dataclasses.replace(
            self, **{table: dataclasses.replace(getattr(self, table), **changes) for table, changes in tables.items()}
        )

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> Settings:
        """The tree of a :meth:`flat` dict (names missing from it keep their defaults).

        Raises:
            BadArgument: an unknown name.
        """
        unknown_overrides(values)
        return cls()._with({_BY_DEST[name]: value for name, value in values.items()})

    def value(self, leaf: Setting) -> Any:
        """The value of one leaf of this tree."""
        return getattr(getattr(self, leaf.table), leaf.key)

    def flat(self) -> dict[str, Any]:
        """{flat name (:attr:`Setting.dest`): value} of every setting, in :data:`LEAVES` order."""
        return {leaf.dest: self.value(leaf) for leaf in LEAVES}

    def download_options(self) -> DownloadOptions:
        """The [download] table as the download stage's :class:`DownloadOptions` (not validated:
        :meth:`DownloadOptions.validate` is)."""
        return DownloadOptions(**{leaf.to: self.value(leaf) for leaf in leaves("download")})

    def refresh_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`clipsql.refresh.refresh` (all but `progress`)."""
        arguments: dict[str, Any] = {
            _TABLE_TO[table]: self.download_options() for table in TABLES if table in _TABLE_TO
        }
        arguments.update((leaf.to, self.value(leaf)) for leaf in LEAVES if leaf.table not in _TABLE_TO)
        return arguments


def _kind(hint: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of a field's annotation: int, int | None ..."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        if len(kinds) != 1:  # pragma: no cover - a declaration error, caught on import
            raise TypeError(f"a setting has one type (and perhaps None), not {hint}")
        return kinds[0], True
    return hint, False


def _leaves() -> tuple[Setting, ...]:
    found = []
    tables = typing.get_type_hints(Settings)
    for table in dataclasses.fields(Settings):
        hints = typing.get_type_hints(tables[table.name])
        for field in dataclasses.fields(tables[table.name]):
            kind, optional = _kind(hints[field.name])
            m = field.metadata
            found.append(
                Setting(
                    table=table.name,
                    key=field.name,
                    kind=kind,
                    optional=optional,
                    default=field.default,
                    option=m["option"],
                    dest=m["option"].removeprefix("--").replace("-", "_"),
                    help=m["help"],
                    metavar=m["metavar"],
                    default_text=m["default_text"],
                    to=m["to"] or field.name,
                    relative=m["relative"],
                    backend=m["backend"],
                )
            )
    return tuple(found)


#: Every setting, in the tree's order (tables, then fields).
LEAVES: tuple[Setting, ...] = _leaves()
#: The job file's tables, in the tree's order.
TABLES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
#: What each table holds, for the CLI's option groups: its class's docstring up to " (the [".
TABLE_HELP: dict[str, str] = {
    f.name: " ".join((typing.get_type_hints(Settings)[f.name].__doc__ or "").split()).split(" (the [")[0] + "."
    for f in dataclasses.fields(Settings)
}
#: Tables that become one argument of refresh() (table -> its keyword), not one per key.
_TABLE_TO = {f.name: f.metadata["to"] for f in dataclasses.fields(Settings) if "to" in f.metadata}
_BY_KEY = {(leaf.table, leaf.key): leaf for leaf in LEAVES}
_BY_DEST = {leaf.dest: leaf for leaf in LEAVES}


def leaves(table: str) -> tuple[Setting, ...]:
    """The settings of one table of the tree ('source', 'model', 'store', 'download', 'refresh')."""
    return tuple(leaf for leaf in LEAVES if leaf.table == table)


def setting(name: str) -> Setting:
    """The setting of a flat name (`timeout`) or of `table.key` (`download.timeout_s`).

    Raises:
        KeyError: no such setting.
    """
    table, dot, key = name.partition(".")
    return _BY_KEY[(table, key)] if dot else _BY_DEST[name]


def unknown_overrides(values: Mapping[str, Any]) -> None:
    """Refuse flat names that are no setting.

    Raises:
        BadArgument: naming them.
    """
    unknown = sorted(set(values) - set(_BY_DEST))
    if unknown:
        raise BadArgument(f"unknown refresh setting(s): {', '.join(unknown)}")


def read_job_file(path: str | os.PathLike) -> dict[tuple[str, str], Any]:
    """The settings a job file gives: {(table, key): value}, only the keys it sets; floats as
    float, relative paths resolved against the file's folder.

    Raises:
        BadArgument: the file is missing or not TOML, or has an unknown table or key, a value
            of the wrong type (naming the file and `[table] key`), or more than one backend.
    """
    path = Path(path)
    if tomllib is None:  # pragma: no cover
        raise BadArgument("reading job files needs Python >= 3.11 (tomllib) or the tomli package")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise BadArgument(f"job file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadArgument(f"job file {path}: {exc}") from None
    tables = sorted(TABLES)
    base = path.resolve().parent
    found: dict[tuple[str, str], Any] = {}
    for table, values in data.items():
        if table not in tables or not isinstance(values, dict):
            raise BadArgument(
                f"job file {path}: unknown table [{table}]; expected one of " + ", ".join(f"[{t}]" for t in tables)
            )
        for key, value in values.items():
            leaf = _BY_KEY.get((table, key))
            if leaf is None:
                known = ", ".join(leaf.key for leaf in leaves(table))
                raise BadArgument(f"job file {path}: unknown key {key!r} in [{table}]; expected one of {known}")
            if not leaf.accepts(value):
                raise BadArgument(f"job file {path}: {leaf.name} must be {leaf.kind.__name__}, got {value!r}")
            found[(table, key)] = float(value) if leaf.kind is float else _resolve(leaf, value, base)
    backends = [leaf for leaf in LEAVES if leaf.backend and found.get((leaf.table, leaf.key))]
    if len(backends) > 1:
        raise BadArgument(
            f"job file {path}: [store] sets both {' and '.join(leaf.key for leaf in backends)}; choose one backend"
        )
    return found


def _resolve(leaf: Setting, value: Any, base: Path) -> Any:
    """`value` of `leaf` from a job file in folder `base`, a relative path made absolute."""
    if leaf.relative == "path":  # a store URL or directory, or a DuckDB file
        return absolute_store(value, base)
    if leaf.relative == "model" and value.startswith(("./", "../")):
        return str((base / value).resolve())
    return value
