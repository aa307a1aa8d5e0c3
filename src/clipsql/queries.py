"""The registry of named queries: one file per query in queries/, ClickHouse dialect.

Each file opens with a header comment (the aiosql habit: the comment is the docstring)::

    -- name: nearest_photos
    -- Photos nearest to a query vector by cosine distance, closest first.
    -- Parameters:
    --   query_vec  Array(Float32)  the query embedding, (d,) float32, L2-normalized
    --   k          UInt32          how many photos to return (top-k)
    SELECT ...

and every value in its body is a `{name:Type}` parameter, so the file runs verbatim in
clickhouse-client (`--param_k=10`), through clickhouse-connect, and on DuckDB through
:mod:`clipsql.dialect`. Loading checks every file and raises :class:`QueryFileError` naming
the file and line of a missing header, a parameter used but not declared, a parameter
declared but not used, or a parameter used with a type other than the declared one.

A query that takes the metadata filters has one body line ``-- @filters`` (a comment, so the
file runs verbatim, unfiltered) where its WHERE may go on: :meth:`NamedQuery.with_filters`
puts an ``AND <condition>`` line there for each filter set, and declares the filter's
parameter in the header; the conditions themselves come from one registry,
:data:`clipsql.search.filters.FILTERS`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .constants import DEFAULT_MODEL
from .errors import BadArgument, NotFound, QueryFileError
from .resources import queries_dir, sql_dir
from .sqlfiles import PARAMETER_RE

if TYPE_CHECKING:  # pandas loads with the first DataFrame made, not with this module
    import pandas as pd
    import pyarrow as pa

_NAME_RE = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$")
_PARAMS_RE = re.compile(r"^--\s*Parameters:\s*$", re.IGNORECASE)
#: '-- Runs after: sql/<dialect>/<folder>/<file>.sql (why)': a script that must run first in the
#: same session (it builds a temporary table the query reads).
_RUNS_AFTER_RE = re.compile(r"^--\s*Runs after:\s*(sql/\S+\.sql)\b.*$")
#: '--   name  Type  meaning' (the type written without spaces, e.g. Nullable(String)).
_PARAM_LINE_RE = re.compile(r"^--\s+([A-Za-z_][A-Za-z0-9_]*)\s+(\S+)\s+(.+)$")
#: The body line where :meth:`NamedQuery.with_filters` puts the filter conditions (group 1: its indent).
FILTERS_MARKER_RE = re.compile(r"^([ \t]*)--[ \t]*@filters\b")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A declared query parameter: ClickHouse `type`, what it means, and its header line."""

    name: str
    type: str
    meaning: str
    line: int

    @property
    def nullable(self) -> bool:
        return self.type.startswith("Nullable(")


@dataclasses.dataclass(frozen=True)
class NamedQuery:
    """One query file: `name`, `description`, declared `parameters`, the full `sql` text."""

    name: str
    path: Path
    description: str
    parameters: dict[str, Parameter]
    sql: str
    #: Scripts (paths as written, `sql/...`) that must run first in the same session.
    runs_after: tuple[str, ...] = ()
    #: The line (1-based) of the file's ``-- @filters`` marker; None: the query takes no filters.
    filters_line: int | None = None
    # with_filters' answers by their conditions: one parse per combination of filters, not per search.
    _filtered: dict = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def takes_filters(self) -> bool:
        """Whether the query has a ``-- @filters`` line (:meth:`with_filters`)."""
        return self.filters_line is not None

    def bind(self, values: dict) -> dict:
        """Check `values` against the declared parameters; Nullable ones default to NULL.

        Raises:
            BadArgument: an undeclared name, a missing non-Nullable value, or a float
                parameter holding NaN or infinity.
        """
        unknown = sorted(set(values) - set(self.parameters))
        if unknown:
            raise BadArgument(
                f"query {self.name!r} has no parameter {', '.join(unknown)}; it takes {', '.join(self.parameters)}"
            )
        bound = {}
        for name, param in self.parameters.items():
            value = values.get(name)
            if value is None and not param.nullable:
                raise BadArgument(f"query {self.name!r} needs a value for {name} ({param.type}: {param.meaning})")
            if isinstance(value, float) and not math.isfinite(value):
                raise BadArgument(f"{name} must be a finite number, got {value}")
            bound[name] = value
        return bound

    @functools.cached_property
    def executable_sql(self) -> str:
        """`sql` without its comment lines: what :meth:`run` sends. The header alone is most
        of a file's text, and the client scans every character of a query before sending it
        (clickhouse-connect's binding: ~0.8 ms of a 7 ms search, measured on the search snapshot's query)."""
        return "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))

    def run(self, store, **values) -> pd.DataFrame:
        """Run on `store` (any engine) with the values bound as parameters."""
        return store.query_clickhouse(self.executable_sql, self.bind(values))

    def run_arrow(self, store, **values) -> pa.Table:
        """:meth:`run`, the rows as a pyarrow Table (no pandas loaded)."""
        return store.query_arrow(store.translate(self.executable_sql), self.bind(values))

    def with_filters(self, conditions: Sequence[tuple[str, Parameter]]) -> NamedQuery:
        """This query with filter conditions in place of its ``-- @filters`` line.

        Args:
            conditions: (condition, parameter) pairs, e.g. ("x = {x:String}",
                Parameter("x", "String", ...)): each condition becomes a line
                ``AND <condition>`` at the marker, and its parameter a line of the header.
                Conditions come from :data:`clipsql.search.filters.FILTERS`, never from values.

        Returns:
            A :class:`NamedQuery` of the same name and path whose `sql` is a valid query file
            (checked as a file is: parameters declared and used alike); itself when
            `conditions` is empty. Made once per combination of conditions.

        Raises:
            QueryFileError: the query has no ``-- @filters`` line, a filter parameter has
                the name of one of its own, or a condition does not use its parameter.
        """
        key = tuple(conditions)
        if not key:
            return self
        made = self._filtered.get(key)
        if made is None:
            made = self._filtered[key] = self._make_filtered(key)
        return made

    def _make_filtered(self, conditions: tuple[tuple[str, Parameter], ...]) -> NamedQuery:
        if self.filters_line is None:
            raise QueryFileError(f"{self.path}: query {self.name!r} takes no filters (it has no '-- @filters' line)")
        clash = sorted({p.name for _, p in conditions} & set(self.parameters))
        if clash:
            raise QueryFileError(f"{self.path}: filter parameter {', '.join(clash)} is a parameter of the query itself")
        lines = self.sql.splitlines()
        marker = FILTERS_MARKER_RE.match(lines[self.filters_line - 1])
        indent = marker.group(1) if marker else ""
        body = [f"{indent}AND {condition}" for condition, _ in conditions]
        lines[self.filters_line - 1 : self.filters_line] = body
        declared = [f"--   {p.name}  {p.type}  {p.meaning}" for _, p in conditions]
        if self.parameters:  # the filter parameters follow the query's own in the header, aligned alike
            after = max(p.line for p in self.parameters.values())
            columns = re.match(r"^(--\s+\S+\s+)(\S+\s+)", lines[after - 1])
            if columns:
                name_width, type_width = len(columns.group(1)), len(columns.group(2))
                declared = [
                    (f"--   {p.name}  ".ljust(name_width) + f"{p.type}  ".ljust(type_width) + p.meaning)
                    for _, p in conditions
                ]
            lines[after:after] = declared
        else:
            first_code = next(n for n, line in enumerate(lines) if not line.startswith("--"))
            lines[first_code:first_code] = ["-- Parameters:", *declared]
        return parse_query_text("\n".join(lines) + "\n", self.path)


def parse_query_file(path: Path) -> NamedQuery:
    """Parse and check one query file (see the module docstring).

    Raises:
        QueryFileError: with `path:line` of the first problem.
    """
    return parse_query_text(path.read_text(encoding="utf-8"), path)


def parse_query_text(text: str, path: Path) -> NamedQuery:
    """Parse and check the text of the query file `path` (see the module docstring).

    Raises:
        QueryFileError: with `path:line` of the first problem.
    """
    lines = text.splitlines()

    def fail(line: int, message: str) -> QueryFileError:
        return QueryFileError(f"{path}:{line}: {message}")

    if not lines or not (m := _NAME_RE.match(lines[0])):
        raise fail(1, "the file must start with a header line '-- name: <query_name>'")
    name = m.group(1)
    if name != path.stem:
        raise fail(1, f"query name {name!r} differs from the file name {path.stem!r}")
    description: list[str] = []
    parameters: dict[str, Parameter] = {}
    in_params, body_start = False, None
    runs_after: list[tuple[str, int]] = []
    for number, line in enumerate(lines[1:], 2):
        if not line.startswith("--"):
            body_start = number
            break
        if _PARAMS_RE.match(line):
            in_params = True
            continue
        if ra := _RUNS_AFTER_RE.match(line):
            runs_after.append((ra.group(1), number))
            continue
        if in_params:
            pm = _PARAM_LINE_RE.match(line)
            if not pm:
                raise fail(number, "a parameter line must read '--   name  Type  meaning'")
            pname, ptype, meaning = pm.groups()
            if pname in parameters:
                raise fail(number, f"parameter {pname} is declared twice")
            parameters[pname] = Parameter(pname, ptype, meaning.strip(), number)
        else:
            description.append(line[2:].strip())
    if not any(description):
        raise fail(2, "the header needs a description line after the name")
    if body_start is None or not "\n".join(lines[body_start - 1 :]).strip():
        raise fail(len(lines), "the file has a header but no SQL")
    used: dict[str, tuple[str, int]] = {}
    filters_line = None
    for number, line in enumerate(lines[body_start - 1 :], body_start):
        if FILTERS_MARKER_RE.match(line):
            if filters_line is not None:
                raise fail(number, f"a second '-- @filters' line (the first is line {filters_line})")
            filters_line = number
        code = line.split("--", 1)[0]
        for um in PARAMETER_RE.finditer(code):
            pname, ptype = um.group(1), um.group(2).replace(" ", "")
            if pname not in parameters:
                raise fail(number, f"parameter {pname} is used but not declared in the header")
            if ptype != parameters[pname].type.replace(" ", ""):
                raise fail(number, f"parameter {pname} is used as {ptype} but declared {parameters[pname].type}")
            used.setdefault(pname, (ptype, number))
    for pname, param in parameters.items():
        if pname not in used:
            raise fail(param.line, f"parameter {pname} is declared but not used")
    for script, script_line in runs_after:
        _check_runs_after(script, script_line, parameters, fail)
    return NamedQuery(
        name,
        path,
        " ".join(d for d in description if d),
        parameters,
        text,
        tuple(script for script, _ in runs_after),
        filters_line,
    )


def _check_runs_after(script: str, line: int, parameters: dict[str, Parameter], fail) -> None:
    """A 'Runs after' script exists and takes only parameters the query declares, alike."""
    target = sql_dir() / script[len("sql/") :]
    if not target.is_file():
        raise fail(line, f"'Runs after' names {script}, which does not exist")
    for um in PARAMETER_RE.finditer(target.read_text(encoding="utf-8")):
        pname, ptype = um.group(1), um.group(2).replace(" ", "")
        if pname not in parameters or parameters[pname].type.replace(" ", "") != ptype:
            raise fail(line, f"{script} uses parameter {pname} {ptype}, which this query does not declare alike")


def load_queries(folder: Path | None = None) -> dict[str, NamedQuery]:
    """Every query file in `folder` (default: queries/), checked, by name.

    Raises:
        QueryFileError: the first malformed file, with file and line.
    """
    folder = Path(folder) if folder is not None else queries_dir()
    return {q.name: q for q in (parse_query_file(p) for p in sorted(folder.glob("*.sql")))}


@functools.lru_cache(maxsize=None)
def _default_registry() -> dict[str, NamedQuery]:
    return load_queries()


def get_query(name: str) -> NamedQuery:
    """The named query from queries/.

    Raises:
        NotFound: no query of that name.
    """
    registry = _default_registry()
    if name not in registry:
        raise NotFound(f"no query named {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


# --- the SQL console ---------------------------------------------------------------------

#: Shell variables the console commands use, defined once at the top of :func:`console_commands`.
CONSOLE_VARIABLES = (
    ("MODEL", DEFAULT_MODEL, "models.model of the vectors to search (see queries/models.sql)"),
    (
        "PHOTO_ID",
        '$(clickhouse-client --query "SELECT min(photo_id) FROM photos FINAL WHERE is_deleted = 0")',
        "any photos.photo_id",
    ),
    (
        "QUERY_VEC",
        "$(clickhouse-client --query \"SELECT clip_text_embedding('surfing')\")",
        "a query vector: a text's CLIP embedding, made by the server (sql/clickhouse/udf/)",
    ),
)
#: Example values by parameter name, as shell words; the others follow their type (see :func:`console_value`).
_CONSOLE_EXAMPLES = {
    "model": '"$MODEL"',
    "photo_id": '"$PHOTO_ID"',
    "photo_ids": "\"['$PHOTO_ID']\"",
    "query_vec": '"$QUERY_VEC"',
    # model_overlap: a model compared with itself, unless the analyst sets two models and vectors
    "model_a": '"$MODEL"',
    "model_b": '"$MODEL"',
    "query_a": '"$QUERY_VEC"',
    "query_b": '"$QUERY_VEC"',
    "query": "'surfing'",
    "k": "10",
    "offset": "0",
    "n": "10",
    "per_facet": "10",
    "sample": "500",
    "candidates": "100",
    # the approximate-index table of the model's width (512: CLIP ViT-B/32)
    "ann_table": "photo_embeddings_ann_512",
    "min_vectors": "1",
    "max_distance": "0.05",
    "k_1": "1",
    "k_2": "5",
    "k_3": "10",
}
_CONSOLE_BY_TYPE = (
    ("Array(String)", "'[]'"),
    ("Float", "0.5"),
    ("UInt", "10"),
    ("Int", "10"),
    ("Bool", "false"),
    ("Date", "'2020-01-01'"),
)


def console_value(param: Parameter) -> str:
    """An example value of `param` as a clickhouse-client `--param_` word: NULL for a Nullable
    parameter, else by its name (:data:`_CONSOLE_EXAMPLES`) or its type, else a shell variable."""
    if param.nullable:
        return "'\\N'"  # NULL: the filter or bound is off
    if param.name in _CONSOLE_EXAMPLES:
        return _CONSOLE_EXAMPLES[param.name]
    for prefix, value in _CONSOLE_BY_TYPE:
        if param.type.startswith(prefix):
            return value
    return f'"${param.name.upper()}"'  # a value only the analyst knows: a shell variable named after it


def _summary(description: str, width: int = 100) -> str:
    """The first sentence of a description, cut at a word boundary to `width` characters."""
    first = re.split(r"(?<=\.)\s", description, maxsplit=1)[0]
    if len(first) <= width:
        return first
    return first[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def console_command(query: NamedQuery, *, folder: str = "queries", client: str = "clickhouse-client") -> str:
    """The shell command that runs `query` with clickhouse-client, one `--param_<name>=` per
    declared parameter (in header order, with an example value), the file given with
    `--queries-file <folder>/<name>.sql`, after the scripts it `runs_after` (clickhouse-client
    runs several files over one connection, so a temporary table they build is there); long
    commands are continued over lines with `\\`."""
    words = [client] + [f"--param_{name}={console_value(param)}" for name, param in query.parameters.items()]
    # Scripts it runs after go first in the same invocation: one connection, one session.
    words.append(f"--queries-file {' '.join(query.runs_after + (f'{folder}/{query.path.name}',))}")
    line = " ".join(words)
    return line if len(line) <= 100 else " \\\n    ".join(words)


def console_commands(
    queries: dict[str, NamedQuery] | None = None, *, folder: str = "queries", client: str = "clickhouse-client"
) -> str:
    """The SQL console commands of docs/console.md: the shell variables they use, then for every named
    query (default: every file of queries/, by name) a comment with the first sentence of its
    description and its :func:`console_command`. Generated from the headers, so it cannot go
    stale: tests/test_console_docs.py checks docs/console.md holds it.

    Returns:
        Shell text ending in a newline.
    """
    queries = load_queries() if queries is None else queries
    lines = [
        f"{name}={value}  # {meaning}" if not value.startswith("$(") else f'{name}="{value}"  # {meaning}'
        for name, value, meaning in CONSOLE_VARIABLES
    ]
    for name in sorted(queries):
        query = queries[name]
        lines += ["", f"# {name}: {_summary(query.description)}", console_command(query, folder=folder, client=client)]
    return "\n".join(lines) + "\n"
