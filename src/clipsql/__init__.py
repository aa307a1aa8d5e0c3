"""clipsql: SQL-centric multimodal photo search.

CLIP embeddings of photos (Unsplash releases or your own folders) in ClickHouse (embedded
chdb by default, or a server) or DuckDB, searched with the parameterized SQL of queries/.

    >>> from clipsql import refresh, search
    >>> refresh("photos.tsv000", model="path/to/clip")      # the main job
    >>> search.text("a dog on a beach", k=10)                # a pandas DataFrame

`refresh`, `RefreshSummary` and `search` are loaded on first use (PEP 562), so importing
one module of the package (the UDF script's `clipsql.udf`, say) does not load the ETL.
"""

from __future__ import annotations

import importlib
import sys
import types

from .constants import VERSION

__version__ = VERSION
__all__ = ["refresh", "RefreshSummary", "search", "__version__"]
_LAZY = ("refresh", "RefreshSummary", "search")


def __getattr__(name: str):
    if name == "search":  # not `from . import search`: that asks this function for it again
        return importlib.import_module(".search", __name__)
    if name in ("refresh", "RefreshSummary"):
        from .refresh import RefreshSummary, refresh

        # `clipsql.refresh` is the function, as it always was, not the submodule of that name.
        globals().update(refresh=refresh, RefreshSummary=RefreshSummary)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The package's module type: when Python binds the submodule `clipsql.refresh` on the
    package (it does so the first time anything imports that submodule), the package keeps
    the function `refresh` under that name instead, as the eager package did."""

    def __setattr__(self, name: str, value) -> None:
        if name == "refresh" and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.refresh":
            value = value.refresh
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
