"""Constants several layers share, kept in the lowest module so that no module imports an
upper one (or an ETL stage) for a number.

:data:`STORE_DIM` is the store's vector width (search checks query vectors against it, the
refresh checks the model against it); :data:`DEFAULT_MODEL` the checkpoint used when none
is named (the embedder, the refresh, the UDF script, the SQL console's examples).
"""

from __future__ import annotations

#: The package version (also in pyproject.toml).
VERSION = "0.1.0"
#: The CLIP checkpoint used when none is named: a hub name (512-dim).
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
#: Vector width the store's HNSW index and CHECK are built for (sql/*/001_core.sql).
STORE_DIM = 512
