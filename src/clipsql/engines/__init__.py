"""The engines a store runs on, behind one protocol (:class:`~clipsql.engines.base.Store`),
and the one registry that maps a store's URL to its engine.

A store is named by one URL form:

| form | engine | image cache |
| --- | --- | --- |
| `chdb:///abs/path`, `chdb:rel/path`, or a plain directory | chdb (embedded ClickHouse) | the directory |
| `http(s)://user:password@host:8123/database` (parsed by clickhouse-connect) | a ClickHouse server | `$CLIPSQL_STORE` or ./clipsql-store |
| `duckdb:///abs/file.duckdb`, `duckdb:file.duckdb`, `duckdb::memory:`, or a path ending in .duckdb | DuckDB | `$CLIPSQL_STORE` or ./clipsql-store |

The options of the first wave (`clickhouse_url=`, `duckdb=`, `$CLICKHOUSE_URL`, with `store`
the image cache directory) are kept as aliases: :func:`resolve_target` reads both forms.

Adding an engine is one folder of DDL and scripts under `sql/<dialect>/` (unless it shares
a dialect), one module here, and one line of :data:`ENGINES`. An engine module holds:

- ``SCHEMES``: the URL schemes it answers;
- ``CAPABILITIES``: its :class:`~clipsql.engines.base.Capabilities`;
- a :class:`~clipsql.engines.base.Store` subclass implementing the protocol (translate,
  execute, query as Arrow, insert, after-load, close, is-missing-table);
- ``exists(target) -> bool``: whether the store is there, told without opening it;
- ``holder(target) -> int | None``: the pid of the process holding the store now, told
  without opening it (None: free, or the engine lets many processes in);
- ``open_target(target, **lease) -> Store``: the store a :class:`StoreTarget`
  names; its Store subclass connects (``_connect``, raising StoreBusy naming the holder, or
  StoreError with the reason) on the first operation.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import urllib.parse
from pathlib import Path
from types import ModuleType

from ..errors import BadArgument
from .base import TABLES, Capabilities, Store
from .busy import describe_holder

__all__ = [
    "ENGINES",
    "TABLES",
    "Capabilities",
    "Store",
    "StoreTarget",
    "absolute_store",
    "capabilities_of",
    "default_store_dir",
    "engine_module",
    "open_target",
    "resolve_target",
    "store_exists",
    "store_holder",
    "without_password",
]

#: The registry: engine name -> the module that implements it (imported when first used).
ENGINES: dict[str, str] = {
    "chdb": "clipsql.engines.chdb",
    "clickhouse": "clipsql.engines.clickhouse",
    "duckdb": "clipsql.engines.duckdb",
}
DEFAULT_STORE = "clipsql-store"
#: A path with this suffix, given where a store is expected, is a DuckDB file.
DUCKDB_SUFFIXES = (".duckdb",)


@dataclasses.dataclass(frozen=True)
class StoreTarget:
    """Which store to open: the engine, where its data is, and the image cache directory.

    Attributes:
        engine: a name of :data:`ENGINES`.
        location: chdb's data directory, the DuckDB file (':memory:' for a throwaway one), or
            the server's URL (with its password: never shown; see :attr:`description`).
        root: the store directory: the image cache (`root/images`), for chdb also the data.
    """

    engine: str
    location: str
    root: Path

    @property
    def description(self) -> str:
        """Where the store is, for messages: `chdb:/abs/path`, `duckdb:file`, or the URL
        without its password."""
        if self.engine == "clickhouse":
            return without_password(self.location)
        return f"{self.engine}:{self.location}"


def engine_module(name: str) -> ModuleType:
    """The module implementing engine `name` (see the module docstring for what it holds).

    Raises:
        BadArgument: `name` is not in :data:`ENGINES`.
    """
    if name not in ENGINES:
        raise BadArgument(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def _schemes() -> dict[str, str]:
    """URL scheme -> engine name, from each engine module's SCHEMES."""
    return {scheme: name for name in ENGINES for scheme in engine_module(name).SCHEMES}


def default_store_dir() -> Path:
    """`$CLIPSQL_STORE` when it is a directory (not a URL), else `./clipsql-store`."""
    value = os.environ.get("CLIPSQL_STORE") or ""
    return Path(value) if value and _url_scheme(value) is None else Path(DEFAULT_STORE)


def _url_scheme(text: str) -> str | None:
    """The scheme of `text` when it is a store URL of a registered engine, else None (a path)."""
    scheme, sep, _ = text.partition(":")
    # One letter is a Windows drive (C:\...), not a scheme.
    if not sep or len(scheme) < 2:
        return None
    return scheme.lower() if scheme.lower() in _schemes() else None


def _url_path(url: str) -> str:
    """The path a `chdb:` or `duckdb:` URL names: `scheme:///abs`, `scheme://rel/dir` and
    `scheme:rel` alike (percent-escapes decoded)."""
    rest = url.split(":", 1)[1]
    if rest.startswith("//"):
        rest = rest[2:]
    path = urllib.parse.unquote(rest.split("?", 1)[0])
    return ":memory:" if path in (":memory:", "/:memory:") else path


def resolve_target(
    store: str | os.PathLike | None = None,
    *,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
) -> StoreTarget:
    """The store a set of backend options names (no engine is opened).

    `store` is a store URL or a directory (module docstring); `$CLIPSQL_STORE` when None. The
    aliases: `duckdb` (a DuckDB file), `clickhouse_url` (or `$CLICKHOUSE_URL` unless a DuckDB
    file is given), each with `store` as the image cache directory.

    Raises:
        BadArgument: two backends given (a URL and an alias, or both aliases), or a URL that
            names no path or host.
    """
    text = os.fspath(store) if store is not None else os.environ.get("CLIPSQL_STORE") or None
    scheme = _url_scheme(text) if text is not None else None
    if scheme is not None:
        if clickhouse_url or duckdb:
            raise BadArgument(
                f"choose one backend: the store URL {without_password(str(text))} or "
                f"{'--duckdb' if duckdb else '--clickhouse-url'}, not both"
            )
        engine = _schemes()[scheme]
        if engine == "clickhouse":
            return StoreTarget("clickhouse", str(text), default_store_dir())
        path = _url_path(str(text))
        if not path:
            raise BadArgument(f"store URL {text!r} names no path; e.g. {scheme}:///abs/path or {scheme}:rel/path")
        if engine == "chdb":
            return StoreTarget("chdb", path, Path(path))
        return StoreTarget(engine, path, default_store_dir())
    clickhouse_url = clickhouse_url or (None if duckdb else os.environ.get("CLICKHOUSE_URL"))
    if duckdb and clickhouse_url:
        raise BadArgument("choose one backend: --duckdb or --clickhouse-url, not both")
    root = Path(text) if text is not None else default_store_dir()
    if duckdb:
        return StoreTarget("duckdb", os.fspath(duckdb), root)
    if clickhouse_url:
        return StoreTarget("clickhouse", clickhouse_url, root)
    if text is not None and text.lower().endswith(DUCKDB_SUFFIXES):
        return StoreTarget("duckdb", text, default_store_dir())
    return StoreTarget("chdb", str(root), root)


def store_exists(target: StoreTarget) -> bool:
    """Whether the store `target` names is already there, told without opening it (a server
    store counts as there: only a connection could tell, and it creates the database)."""
    return bool(engine_module(target.engine).exists(target))


def capabilities_of(target: StoreTarget) -> Capabilities:
    """The capabilities of the engine `target` names, without opening it."""
    return engine_module(target.engine).CAPABILITIES


def absolute_store(store: str, base: Path) -> str:
    """`store` (a URL or a directory, as a job file in folder `base` writes it) with a
    relative path made absolute against `base`: `chdb:rel` -> `chdb:///base/rel`, `dir` ->
    `/base/dir`; server URLs and ':memory:' as they are."""
    scheme = _url_scheme(store)
    if scheme is None:
        return store if store == ":memory:" else os.path.normpath(base / Path(store).expanduser())
    if _schemes()[scheme] == "clickhouse":
        return store
    path = _url_path(store)
    if path == ":memory:" or os.path.isabs(path):
        return store
    return f"{scheme}://" + os.path.normpath(base / Path(path).expanduser())


def store_holder(target: StoreTarget) -> str | None:
    """Who holds the store now, e.g. 'pid 123 (clipsql search text beach)'; None when it is
    free or its engine lets many processes in; told without opening it."""
    pid = engine_module(target.engine).holder(target)
    return None if pid is None else describe_holder(pid or None, target.root)[0]


def open_target(target: StoreTarget, **lease) -> Store:
    """The store `target` names, on its engine, created when missing; the engine is connected
    on the first operation. `lease`: :class:`~clipsql.engines.base.Store`'s wait_s,
    idle_release_s, max_idle_s. Not migrated.

    Raises:
        BadArgument: a malformed server URL.
    """
    target.root.mkdir(parents=True, exist_ok=True)
    return engine_module(target.engine).open_target(target, **lease)


def without_password(url: str) -> str:
    """`url` with its password replaced by ***, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # an unparsable port: show no credentials at all
        return url.split("@")[-1]
    return url
