"""Constants several layers share, kept in the lowest module so that no module imports an
upper one (or an ETL stage) for a number.

:data:`MAX_WIDTH` is the widest vector a store holds (each model's own width is in the models
table); :data:`DEFAULT_MODEL` the checkpoint used when none
is named (the embedder, the refresh, the UDF script, the SQL console's examples). The
refresh's own defaults live here too, so that :mod:`clipsql.settings` (below the refresh)
can offer them; `from clipsql.refresh import DEFAULT_CHUNK_SIZE` works as before.
"""

from __future__ import annotations

#: The package version (also in pyproject.toml).
VERSION = "0.1.0"
#: The CLIP checkpoint used when none is named: a hub name (512-dim).
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
#: The widest vector a store holds, in floats: models.dim is a UInt16 (sql/*/001_core.sql).
MAX_WIDTH = 65535
#: The device the CLIP model runs on when none is named: cuda, then mps, then cpu.
DEFAULT_DEVICE = "auto"

#: Photos per chunk of a refresh: downloaded, embedded and loaded before the next chunk is read.
DEFAULT_CHUNK_SIZE = 1024
#: Base of the backoff before a transient download failure is retried by a later run, s.
DEFAULT_RETRY_BACKOFF_S = 3600.0
#: Default largest share of the store's photos one run may flag deleted or purge; above it
#: the run stops before any write (a truncated release must not empty the store).
DEFAULT_MAX_DELETE_FRACTION = 0.1
#: Where a refresh downloads and embeds: 'local' (threads and the model in this process), or
#: 'ray' / 'ray://host:port' (a Ray Data pipeline, clipsql.ray_executor).
DEFAULT_EXECUTOR = "local"
