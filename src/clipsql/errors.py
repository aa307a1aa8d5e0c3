"""Typed exceptions of clipsql.

The library raises these; only the CLI turns them into a one-line message and an exit
code (the sqlite-utils habit: library errors are typed, presentation is the CLI's job).
"""


class ClipsqlError(Exception):
    """Base class of every error clipsql raises on purpose."""


class BadArgument(ClipsqlError, ValueError):
    """An argument (CLI option or API parameter) is invalid; raised before any work starts."""


class SourceError(ClipsqlError):
    """A source (release zip, TSV, URL or image folder) cannot be read at all."""


class ModelError(ClipsqlError):
    """A CLIP checkpoint cannot be loaded or does not fit the store."""


class StoreError(ClipsqlError):
    """The store (chdb path, ClickHouse server, DuckDB file) cannot be opened or is inconsistent."""


class QueryFileError(ClipsqlError):
    """A file in queries/ is malformed; the message names the file and line."""


class NotFound(ClipsqlError, LookupError):
    """A photo_id, model or named query that the caller asked for does not exist."""


class StoreBusy(StoreError):
    """Another process has the store open (chdb lets one process open a data path at a time);
    the CLI exits 75 (try again later). `pid` and `command` name the holder when known."""

    def __init__(self, message: str, *, path=None, pid: int | None = None, command: str = ""):
        super().__init__(message)
        self.path = path
        self.pid = pid
        self.command = command


class ExecutorError(ClipsqlError):
    """The executor of a refresh cannot be used: a Ray cluster that cannot be reached, or whose
    workers do not see the store directory."""
