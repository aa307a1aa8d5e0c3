"""Job files: the settings of a scheduled refresh in a TOML file under etl/.

Public entry points: :func:`load_job` (file -> settings), :func:`job_settings` (defaults <
job file < explicit overrides) and :func:`run_job` (the refresh a job file describes).

    clipsql refresh etl/unsplash_lite.toml              # what a schedule runs
    clipsql refresh etl/unsplash_lite.toml --limit 100  # options given on the command line win

A job file has up to five tables; every key is optional and names a `clipsql refresh`
option (see :data:`JOB_KEYS`)::

    [source]    location, limit
    [model]     name, label, device, batch_size
    [store]     path, clickhouse_url, duckdb          (one backend)
    [download]  workers, width, timeout_s, retries, max_bytes, max_retry_after_s,
                connect_timeout_s, total_timeout_s, backoff_s, max_pixels
    [refresh]   chunk_size, retry_failed, retry_backoff_s, purge, max_delete_fraction

Relative paths in a job file (source location, store path, DuckDB file, and a model given
as './dir' or '../dir') are relative to the job file's folder, so a schedule works from
any working directory. An unknown table or key, or a value of the wrong type, is refused
with the file and key named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .constants import DEFAULT_MODEL
from .download import DownloadOptions
from .embed import DEFAULT_BATCH_SIZE
from .errors import BadArgument
from .sources import DEFAULT_SOURCE

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

#: (table, key) of a job file -> (setting name, i.e. the CLI option's dest, and its type).
JOB_KEYS: dict[tuple[str, str], tuple[str, type]] = {
    ("source", "location"): ("source", str),
    ("source", "limit"): ("limit", int),
    ("model", "name"): ("model", str),
    ("model", "label"): ("model_name", str),
    ("model", "device"): ("device", str),
    ("model", "batch_size"): ("batch_size", int),
    ("store", "path"): ("store", str),
    ("store", "clickhouse_url"): ("clickhouse_url", str),
    ("store", "duckdb"): ("duckdb", str),
    ("download", "workers"): ("workers", int),
    ("download", "width"): ("width", int),
    ("download", "timeout_s"): ("timeout", float),
    ("download", "retries"): ("retries", int),
    ("download", "max_bytes"): ("max_bytes", int),
    ("download", "max_retry_after_s"): ("max_retry_after", float),
    ("download", "connect_timeout_s"): ("connect_timeout", float),
    ("download", "total_timeout_s"): ("total_timeout", float),
    ("download", "backoff_s"): ("backoff", float),
    ("download", "max_pixels"): ("max_pixels", int),
    ("refresh", "chunk_size"): ("chunk_size", int),
    ("refresh", "retry_failed"): ("retry_failed", bool),
    ("refresh", "retry_backoff_s"): ("retry_backoff", float),
    ("refresh", "purge"): ("purge", bool),
    ("refresh", "max_delete_fraction"): ("max_delete_fraction", float),
}


def _defaults() -> dict[str, Any]:
    from .refresh import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_DELETE_FRACTION, DEFAULT_RETRY_BACKOFF_S

    d = DownloadOptions()
    return {"source": DEFAULT_SOURCE, "limit": None, "model": DEFAULT_MODEL, "model_name": None,
            "device": "auto", "batch_size": DEFAULT_BATCH_SIZE, "store": None, "clickhouse_url": None,
            "duckdb": None, "workers": d.workers, "width": d.width, "timeout": d.read_timeout_s,
            "retries": d.retries, "max_bytes": d.max_bytes, "chunk_size": DEFAULT_CHUNK_SIZE,
            "retry_failed": False, "retry_backoff": DEFAULT_RETRY_BACKOFF_S, "purge": False,
            "max_retry_after": d.max_retry_after_s, "max_delete_fraction": DEFAULT_MAX_DELETE_FRACTION,
            "connect_timeout": d.connect_timeout_s, "total_timeout": d.total_timeout_s, "backoff": d.backoff_s,
            "max_pixels": d.max_pixels}


#: Names of every refresh setting (the keys of :func:`job_settings`' result).
SETTINGS = tuple(_defaults())


def _check_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def load_job(path: str | os.PathLike) -> dict[str, Any]:
    """Read a job file into settings keyed by CLI option dest (only the keys it sets).

    Returns:
        e.g. {'source': '/abs/photos.tsv000', 'store': '/abs/clipsql-store', 'limit': 100}.

    Raises:
        BadArgument: the file is missing or not TOML, or has an unknown table or key, a
            value of the wrong type, or more than one backend.
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
    tables = sorted({table for table, _ in JOB_KEYS})
    base = path.resolve().parent
    settings: dict[str, Any] = {}
    for table, values in data.items():
        if table not in tables or not isinstance(values, dict):
            raise BadArgument(f"job file {path}: unknown table [{table}]; expected one of "
                              + ", ".join(f"[{t}]" for t in tables))
        for key, value in values.items():
            if (table, key) not in JOB_KEYS:
                known = ", ".join(k for t, k in JOB_KEYS if t == table)
                raise BadArgument(f"job file {path}: unknown key {key!r} in [{table}]; expected one of {known}")
            name, kind = JOB_KEYS[(table, key)]
            if not _check_type(value, kind):
                raise BadArgument(f"job file {path}: [{table}] {key} must be {kind.__name__}, got {value!r}")
            settings[name] = float(value) if kind is float else value
    for name in ("source", "store", "duckdb"):
        value = settings.get(name)
        if isinstance(value, str) and not value.startswith(("http://", "https://")) and value != ":memory:":
            settings[name] = os.path.normpath(base / Path(value).expanduser())
    model = settings.get("model")
    if isinstance(model, str) and model.startswith(("./", "../")):
        settings["model"] = str((base / model).resolve())
    if settings.get("clickhouse_url") and settings.get("duckdb"):
        raise BadArgument(f"job file {path}: [store] sets both clickhouse_url and duckdb; choose one backend")
    return settings


def job_settings(job: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """Every refresh setting: the defaults, then the job file's, then `overrides` that are
    not None (the options given on the command line).

    A backend given in `overrides` (clickhouse_url or duckdb) replaces the job file's.

    Raises:
        BadArgument: see :func:`load_job`; an unknown override name.
    """
    settings = _defaults()
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise BadArgument(f"unknown refresh setting(s): {', '.join(unknown)}")
    if job is not None:
        settings.update(load_job(job))
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("clickhouse_url") or given.get("duckdb"):
        settings["clickhouse_url"] = settings["duckdb"] = None
    settings.update(given)
    return settings


def refresh_arguments(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`clipsql.refresh.refresh` from :func:`job_settings`' result."""
    s = settings
    options = DownloadOptions(workers=s["workers"], width=s["width"], read_timeout_s=s["timeout"],
                              retries=s["retries"], max_bytes=s["max_bytes"],
                              max_retry_after_s=s["max_retry_after"], connect_timeout_s=s["connect_timeout"],
                              total_timeout_s=s["total_timeout"], backoff_s=s["backoff"],
                              max_pixels=s["max_pixels"])
    return dict(source=s["source"], model=s["model"], model_name=s["model_name"], limit=s["limit"],
                store=s["store"], clickhouse_url=s["clickhouse_url"], duckdb=s["duckdb"],
                batch_size=s["batch_size"], download=options, device=s["device"],
                retry_failed=s["retry_failed"], chunk_size=s["chunk_size"], purge=s["purge"],
                retry_backoff_s=s["retry_backoff"], max_delete_fraction=s["max_delete_fraction"])


def run_job(job: str | os.PathLike | None, *, progress: bool = True, **overrides: Any):
    """Run the refresh a job file describes (or, with `job` None, the defaults), overrides as in
    :func:`job_settings`: what `clipsql refresh [JOB] [options]` runs.

    Returns:
        The :class:`clipsql.refresh.RefreshSummary`.

    Raises:
        What :func:`load_job` and :func:`clipsql.refresh.refresh` raise.
    """
    from .refresh import refresh

    return refresh(progress=progress, **refresh_arguments(job_settings(job, **overrides)))
