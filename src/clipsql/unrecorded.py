"""Runs that could not be written to etl_runs because the store could not be opened (another
process held it for all of the wait): one JSON line each in `<store>/unrecorded_runs.jsonl`.

`clipsql status` lists them with the runs of etl_runs, and the next refresh that gets the
store moves them into etl_runs (then deletes the file), so every failed night is on record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "unrecorded_runs.jsonl"
#: Columns of etl_runs whose values are timestamps (kept as ISO 8601 text in the file).
_TIMESTAMPS = ("started_at", "ended_at")


def runs_file(root: str | os.PathLike) -> Path:
    """`<store>/unrecorded_runs.jsonl`."""
    return Path(root) / FILE_NAME


def add(root: str | os.PathLike, row: dict[str, Any]) -> bool:
    """Append `row` (the columns of etl_runs; timestamps as timezone-aware datetimes) to the
    store's file of unrecorded runs.

    Returns:
        False when it could not be written either (logged; the caller's own error matters more).
    """
    line = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        with open(runs_file(root), "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
        return True
    except OSError:
        log.exception("could not record the failed run in %s either", runs_file(root))
        return False


def read(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The unrecorded runs, oldest first (timestamps as datetimes); a line that is not a JSON
    object (a run killed while writing it) is skipped with a warning."""
    try:
        text = runs_file(root).read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            for key in _TIMESTAMPS:
                if row.get(key):
                    row[key] = dt.datetime.fromisoformat(row[key])
        except ValueError:
            log.warning("%s:%d is not a run record; skipped", runs_file(root), number)
            continue
        rows.append(row)
    return rows


def clear(root: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Remove the file once `rows` (what :func:`read` gave) are in etl_runs; lines added since
    are kept."""
    path = runs_file(root)
    done = {row.get("run_id") for row in rows}
    left = [row for row in read(root) if row.get("run_id") not in done]
    with contextlib.suppress(OSError):
        if left:
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(_plain(r), sort_keys=True) + "\n" for r in left), encoding="utf-8")
            os.replace(tmp, path)
        else:
            path.unlink()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
