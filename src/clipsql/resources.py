"""Where the SQL texts live: `sql/` (DDL per engine) and `queries/` (named searches).

In a checkout (and an editable install) they are the top-level folders of the repository,
where the analyst reads and edits them; a wheel carries copies inside the package
(`clipsql/_sql`, `clipsql/_queries`, see pyproject.toml). `CLIPSQL_QUERIES` points the
registry at another folder of query files.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parent.parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "clipsql cannot find its SQL folder; looked in " + ", ".join(str(c) for c in candidates)
    )


def sql_dir() -> Path:
    """The folder of DDL migrations, one subfolder per engine dialect."""
    return _first_existing(_PACKAGE_DIR / "_sql", _CHECKOUT_ROOT / "sql")


def queries_dir() -> Path:
    """The folder of named search queries (`CLIPSQL_QUERIES` overrides it)."""
    override = os.environ.get("CLIPSQL_QUERIES")
    if override:
        return _first_existing(Path(override))
    return _first_existing(_PACKAGE_DIR / "_queries", _CHECKOUT_ROOT / "queries")
