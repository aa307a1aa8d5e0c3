"""Where the SQL texts live: `sql/` (DDL per engine) and `queries/` (named searches); and
the per-process folder chdb runs user-defined functions from (:func:`chdb_scripts_dir`).

In a checkout (and an editable install) they are the top-level folders of the repository,
where the analyst reads and edits them; a wheel carries copies inside the package
(`clipsql/_sql`, `clipsql/_queries`, see pyproject.toml). `CLIPSQL_QUERIES` points the
registry at another folder of query files.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parent.parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("clipsql cannot find its SQL folder; looked in " + ", ".join(str(c) for c in candidates))


def sql_dir() -> Path:
    """The folder of DDL migrations, one subfolder per engine dialect."""
    return _first_existing(_PACKAGE_DIR / "_sql", _CHECKOUT_ROOT / "sql")


def queries_dir() -> Path:
    """The folder of named search queries (`CLIPSQL_QUERIES` overrides it)."""
    override = os.environ.get("CLIPSQL_QUERIES")
    if override:
        return _first_existing(Path(override))
    return _first_existing(_PACKAGE_DIR / "_queries", _CHECKOUT_ROOT / "queries")


_SCRIPTS_LOCK = threading.Lock()
_scripts_root: Path | None = None


def chdb_scripts_dir(data_path: str | os.PathLike) -> Path:
    """The user_scripts folder (chdb's `udf_path`) of the chdb engine on `data_path` in this process.

    A fresh folder under a per-process temporary directory that is removed at exit, so a
    function registered here never outlives the process or reaches another store. Empty until
    :func:`clipsql.udf.register_text_embedding` writes the function into it;
    :func:`clipsql.db.open_store` starts chdb with it.
    """
    global _scripts_root
    with _SCRIPTS_LOCK:
        if _scripts_root is None:
            _scripts_root = Path(tempfile.mkdtemp(prefix="clipsql-udf-"))
            atexit.register(_remove_scripts_root, _scripts_root, os.getpid())
        folder = _scripts_root / hashlib.sha256(os.fsencode(os.path.abspath(data_path))).hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        return folder


def _remove_scripts_root(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked child that exits through atexit
        shutil.rmtree(folder, ignore_errors=True)
