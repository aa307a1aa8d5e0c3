"""clipsql: SQL-centric multimodal photo search.

CLIP embeddings of photos (Unsplash releases or your own folders) in ClickHouse (embedded
chdb by default, or a server) or DuckDB, searched with the parameterized SQL of queries/.

    >>> from clipsql import refresh, search
    >>> refresh("photos.tsv000", model="path/to/clip")      # the main job
    >>> search.text("a dog on a beach", k=10)                # a pandas DataFrame
"""

from . import search
from .refresh import RefreshSummary, refresh

__version__ = "0.1.0"
__all__ = ["refresh", "RefreshSummary", "search", "__version__"]
