"""What every `clipsql` subcommand shares: the exit statuses and the epilog of its --help
(:mod:`clipsql.cli` applies them in `main()`; :mod:`clipsql.cli_search` and
:mod:`clipsql.cli_eval` print the epilog without importing the command itself)."""

from __future__ import annotations

EXIT_ERROR = 2
#: Exit status when the store is busy: another refresh holds its lock, or another process has
#: a chdb store open (sysexits EX_TEMPFAIL: try again later).
EXIT_LOCKED = EXIT_BUSY = 75
#: Exit status of an interrupted command (Ctrl-C, SIGTERM): 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
#: The epilog of every command's --help.
EXIT_STATUS_HELP = (
    "Exit status: 0 done; 2 an error (one line on stderr; -vv for the traceback); 75 the store is "
    "busy (another process, e.g. a refresh, holds it: try again later); 130 interrupted (Ctrl-C, "
    "SIGTERM)."
)
