"""Job files: the settings of a scheduled refresh in a TOML file under etl/.

Public entry points: :func:`run_job` (the refresh a job file describes), and, kept for their
callers, :func:`load_job`, :func:`job_settings` and :func:`refresh_arguments`: thin
wrappers over the settings tree, :class:`clipsql.settings.Settings`, which declares every
table, key, type, default and command-line option of a job file (see :mod:`clipsql.settings`).

    clipsql refresh etl/unsplash_lite.toml              # what a schedule runs
    clipsql refresh etl/unsplash_lite.toml --limit 100  # options given on the command line win

A job file has up to five tables, one per branch of the tree; every key is optional::

    [source]    location, limit
    [model]     name, label, device, batch_size
    [store]     path, clickhouse_url, duckdb          (one backend)
    [download]  workers, width, timeout_s, retries, max_bytes, max_retry_after_s,
                connect_timeout_s, total_timeout_s, backoff_s, max_pixels
    [refresh]   chunk_size, retry_failed, retry_backoff_s, purge, max_delete_fraction,
                shard, finish, executor

Relative paths in a job file are relative to its folder; an unknown table or key, or a value
of the wrong type, is refused with the file and key named.
"""

from __future__ import annotations

import os
from typing import Any

from .settings import LEAVES, Settings, read_job_file, setting

#: (table, key) of a job file -> (setting name, i.e. the CLI option's dest, and its type).
JOB_KEYS: dict[tuple[str, str], tuple[str, type]] = {(s.table, s.key): (s.dest, s.kind) for s in LEAVES}

#: Names of every refresh setting (the keys of :func:`job_settings`' result; the CLI dests).
SETTINGS: tuple[str, ...] = tuple(s.dest for s in LEAVES)


def load_job(path: str | os.PathLike) -> dict[str, Any]:
    """Read a job file into settings keyed by CLI option dest (only the keys it sets).

    Returns:
        e.g. {'source': '/abs/photos.tsv000', 'store': '/abs/clipsql-store', 'limit': 100}.

    Raises:
        BadArgument: see :func:`clipsql.settings.read_job_file`.
    """
    return {setting(f"{table}.{key}").dest: value for (table, key), value in read_job_file(path).items()}


def job_settings(job: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """Every refresh setting by flat name: the defaults, then the job file's, then `overrides`
    that are not None (the options given on the command line); see :meth:`Settings.load`.

    Raises:
        BadArgument: see :func:`load_job`; an unknown override name.
    """
    return Settings.load(job, **overrides).flat()


def refresh_arguments(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`clipsql.refresh.refresh` from :func:`job_settings`' result."""
    return Settings.from_flat(settings).refresh_arguments()


def run_job(job: str | os.PathLike | None, *, progress: bool = True, **overrides: Any):
    """Run the refresh a job file describes (or, with `job` None, the defaults), overrides by
    flat name as in :meth:`Settings.load`: what `clipsql refresh [JOB] [options]` runs.

    Returns:
        The :class:`clipsql.refresh.RefreshSummary`.

    Raises:
        What :func:`clipsql.settings.read_job_file` and :func:`clipsql.refresh.refresh` raise.
    """
    from .refresh import refresh  # here, not above: reading a job file needs none of the ETL

    return refresh(progress=progress, **Settings.load(job, **overrides).refresh_arguments())
