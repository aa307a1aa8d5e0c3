"""The metadata filters: one registry, :data:`FILTERS`, the only place a filter is written.

Each entry (:class:`Filter`) is a static SQL condition over the columns of the search
relation `photo_search` (sql/<dialect>/004_photo_search.sql; the search snapshot has the same
columns) with one bound, typed parameter named after the filter (a filter max_views would be
``views <= {max_views:UInt64}``), plus its help text and, where the defaults do not fit, its
CLI option and value range. Everything else derives from the entries:

- the value checks (from the parameter's type, the choices and bounds): :meth:`Filters.checked`;
- :class:`Filters`, the value the Python API takes (``Filters.of(country="Iceland")``);
- the CLI options of every search kind (``--country``; :mod:`clipsql.cli_search`);
- the WHERE of the searches: a query file that takes filters has one body line
  ``-- @filters``, where :meth:`clipsql.queries.NamedQuery.with_filters` puts an
  ``AND <condition>`` line for each filter that is set (filters not set add no text and no
  parameter); the same conditions work over photo_search, the search snapshot and DuckDB
  (through :mod:`clipsql.dialect`);
- the console and reference text: :func:`console_filters` (docs/console.md, ``clipsql sql
  --console``) and :func:`filters_markdown` (docs/search.md).

So adding a filter is one entry here plus its test. A condition may name only the columns of
:data:`PHOTO_SEARCH_COLUMNS` and the functions of :data:`CONDITION_FUNCTIONS` (each runs on
ClickHouse and, as itself or a macro of :data:`clipsql.dialect.DUCKDB_MACROS`, on DuckDB); it
holds no literal, so every value is a bound parameter. An entry that breaks a rule raises
:class:`~clipsql.errors.QueryFileError` when it is made.

The conditions are SQL text kept in Python rather than in a .sql file of their own: an entry
is the condition together with its check and its option, and one place per entry is what
makes "adding a filter is one entry" true (a .sql file would split each entry in two).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import BadArgument, QueryFileError
from ..queries import Parameter, load_queries
from ..sqlfiles import PARAMETER_RE
from .checks import check_date, check_float, check_int, check_text

ORIENTATIONS = ("landscape", "portrait", "square")

#: The columns of photo_search a condition may name (sql/<dialect>/004_photo_search.sql;
#: tests/test_filter_registry.py checks they are columns of the relation on every engine).
PHOTO_SEARCH_COLUMNS = (
    "photo_id",
    "model",
    "description",
    "photo_url",
    "photo_image_url",
    "country",
    "city",
    "photographer",
    "submitted_at",
    "width",
    "height",
    "aspect_ratio",
    "orientation",
    "views",
    "downloads",
    "featured",
    "camera_make",
    "camera_model",
    "keywords",
    "color",
)
#: The functions a condition may call: ClickHouse's, each also defined on DuckDB (natively:
#: coalesce, length; as a macro of clipsql.dialect.DUCKDB_MACROS: the others).
CONDITION_FUNCTIONS = ("coalesce", "has", "hasAll", "hasAny", "length", "toDate")
_SQL_WORDS = {"AND", "OR", "NOT", "IS", "NULL", "IN", "TRUE", "FALSE", "BETWEEN"}
#: A condition's characters: no quote (every value is a parameter), no ';', '--', '/', '&'
#: or '\\' (the console text puts it in a sed replacement, see console_filters).
_CONDITION_CHARS_RE = re.compile(r"^[A-Za-z0-9_ (),.<>=!{}:]+$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: Parameter types a filter may bind -> the kind of value it takes.
_KINDS = {
    "String": "text",
    "Date": "date",
    "Bool": "bool",
    "Array(String)": "list",
    **{f"{sign}Int{bits}": "int" for sign in ("", "U") for bits in (8, 16, 32, 64)},
    "Float32": "float",
    "Float64": "float",
}


@dataclasses.dataclass(frozen=True)
class Filter:
    """One filter of the registry, checked when made.

    Attributes:
        name: the :class:`Filters` field, the keyword of the search functions and the bound
            parameter's name, e.g. "country".
        condition: SQL over :data:`PHOTO_SEARCH_COLUMNS` using the parameter ``{name:Type}``
            (ClickHouse syntax), e.g. "views <= {max_views:UInt64}"; a row passes when it is true.
        help: what the filter keeps, one line (CLI help, docs, the query header).
        option: the CLI option; default ``--`` + name with dashes. A Bool filter also gets
            ``--no-...``; an Array filter's option repeats.
        metavar: the CLI's name for the value (default: argparse's).
        choices: the allowed values of a String filter (empty: any string).
        bounds: (low, high) of a number, inclusive; default the parameter type's range
            (Float: -3.4e38..3.4e38).
        not_after: the filter (by name) this one's value may not exceed when both are set
            (a lower bound and its upper bound).

    Raises:
        QueryFileError: a name that is no identifier, a condition that uses another
            parameter than its own, a type outside the supported list, a literal or a
            character outside the allowed ones, a column or function outside the fixed lists,
            choices on a non-String or bounds on a non-number filter.
    """

    name: str
    condition: str
    help: str
    option: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    not_after: str | None = None

    def __post_init__(self) -> None:
        def fail(message: str) -> QueryFileError:
            return QueryFileError(f"filter {self.name!r}: {message} (condition {self.condition!r})")

        if not _NAME_RE.match(self.name):
            raise fail("its name must be a lowercase identifier")
        used = PARAMETER_RE.findall(self.condition)
        if not used or {name for name, _ in used} != {self.name}:
            raise fail(f"the condition must use the parameter {{{self.name}:Type}} and no other")
        types = {ptype.replace(" ", "") for _, ptype in used}
        if len(types) != 1 or next(iter(types)) not in _KINDS:
            raise fail(f"the parameter's type must be one of {', '.join(_KINDS)}")
        code = PARAMETER_RE.sub(" ", self.condition)
        if not _CONDITION_CHARS_RE.match(self.condition) or re.search(r"\b\d+\.\d|[{}:]", code):
            raise fail("a condition holds no literal but small integers and no quote, ';', '--', '/', '&' or '\\'")
        for match in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", code):
            word, is_call = match.group(0), code[match.end() :].lstrip().startswith("(")
            if is_call and word not in CONDITION_FUNCTIONS:
                raise fail(f"function {word} is not one of {', '.join(CONDITION_FUNCTIONS)}")
            if not is_call and word.upper() not in _SQL_WORDS and word not in PHOTO_SEARCH_COLUMNS:
                raise fail(f"{word} is not a column of photo_search ({', '.join(PHOTO_SEARCH_COLUMNS)})")
        if self.choices and self.kind != "text":
            raise fail("choices are for String filters")
        if self.bounds is not None and self.kind not in ("int", "float"):
            raise fail("bounds are for number filters")
        if not self.option:  # frozen: the derived default is written past the dataclass's __setattr__
            object.__setattr__(self, "option", "--" + self.name.replace("_", "-"))

    @property
    def type(self) -> str:
        """The ClickHouse type of the filter's parameter, e.g. "String", "Array(String)"."""
        match = PARAMETER_RE.search(self.condition)
        assert match is not None  # __post_init__ checked the condition has its parameter
        return match.group(2).replace(" ", "")

    @property
    def kind(self) -> str:
        """What value it takes: "text", "date", "bool", "list", "int" or "float"."""
        return _KINDS[self.type]

    @property
    def off(self) -> Any:
        """The value that means "not set": () for a list filter, else None."""
        return () if self.kind == "list" else None

    @property
    def parameter(self) -> Parameter:
        """The filter's parameter as a query file declares it (its meaning: `help`)."""
        return Parameter(self.name, self.type, self.help, 0)

    def check(self, value: Any) -> Any:
        """`value` checked and normalized: a str, a datetime.date, a bool, an int, a float or a
        tuple of str (a list filter also takes one str); `off` for None.

        Raises:
            BadArgument: a value of the wrong type or range, naming the filter.
        """
        if value is None:
            return self.off
        kind = self.kind
        if kind == "text":
            value = check_text(self.name, value)
            if self.choices and value not in self.choices:
                raise BadArgument(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if kind == "date":
            return check_date(self.name, value)
        if kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise BadArgument(f"{self.name} must be True, False or None, got {value!r}")
            return bool(value)
        if kind == "list":
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)):
                raise BadArgument(f"{self.name} must be a list of strings, got {type(value).__name__}")
            return tuple(check_text(self.name, v) for v in value)
        low, high = self.bounds or _type_range(self.type)
        if kind == "int":
            return check_int(self.name, value, int(low), int(high))
        return check_float(self.name, value, low, high)

    def console_value(self, value: Any) -> str:
        """A checked value as a clickhouse-client `--param_` word (shell-quoted where needed)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return '"[' + ",".join(f"'{v}'" for v in value) + ']"'
        text = value.isoformat() if isinstance(value, dt.date) else str(value)
        return text if re.fullmatch(r"[A-Za-z0-9_.:-]+", text) else "'" + text.replace("'", "'\\''") + "'"

    @property
    def usage(self) -> str:
        """The CLI option as its help shows it: "--country COUNTRY", "--featured / --no-featured"."""
        if self.kind == "bool":
            return f"{self.option} / --no-{self.option[2:]}"
        value = self.metavar or ("{" + ",".join(self.choices) + "}" if self.choices else self.name.upper())
        return f"{self.option} {value}" + (" (repeat)" if self.kind == "list" else "")


def _type_range(ptype: str) -> tuple[float, float]:
    """(low, high) of a ClickHouse number type."""
    if ptype.startswith("Float"):
        return (-3.4e38, 3.4e38)
    bits = int(re.sub(r"\D", "", ptype))
    return (0, 2**bits - 1) if ptype.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


#: The registry: every filter, by name, in the order of the CLI's help and of the WHERE.
FILTERS: dict[str, Filter] = {
    f.name: f
    for f in (
        Filter("country", "country = {country:String}", "photos taken in this country (exact)"),
        Filter("city", "city = {city:String}", "photos taken in this city (exact)"),
        Filter("photographer", "photographer = {photographer:String}", "photos by this photographer (username, exact)"),
        Filter(
            "submitted_from",
            "toDate(submitted_at) >= {submitted_from:Date}",
            "photos submitted on or after this UTC date",
            metavar="YYYY-MM-DD",
            not_after="submitted_to",
        ),
        Filter(
            "submitted_to",
            "toDate(submitted_at) <= {submitted_to:Date}",
            "photos submitted on or before this UTC date",
            metavar="YYYY-MM-DD",
        ),
        Filter(
            "orientation",
            "orientation = {orientation:String}",
            "landscape (width > height), portrait (width < height) or square photos",
            choices=ORIENTATIONS,
        ),
        Filter(
            "min_aspect_ratio",
            "aspect_ratio >= {min_aspect_ratio:Float32}",
            "photos whose width / height is at least this",
            metavar="W/H",
            bounds=(0.0, 1e6),
            not_after="max_aspect_ratio",
        ),
        Filter(
            "max_aspect_ratio",
            "aspect_ratio <= {max_aspect_ratio:Float32}",
            "photos whose width / height is at most this",
            metavar="W/H",
            bounds=(0.0, 1e6),
        ),
        Filter("min_width", "width >= {min_width:UInt32}", "photos at least this many pixels wide", metavar="PX"),
        Filter("min_height", "height >= {min_height:UInt32}", "photos at least this many pixels high", metavar="PX"),
        Filter("min_views", "views >= {min_views:UInt64}", "photos viewed at least this many times", metavar="N"),
        Filter(
            "min_downloads",
            "downloads >= {min_downloads:UInt64}",
            "photos downloaded at least this many times",
            metavar="N",
        ),
        Filter("featured", "featured = {featured:Bool}", "only featured (true) or only not featured (false) photos"),
        Filter("camera_make", "camera_make = {camera_make:String}", "photos taken with this camera make (EXIF, exact)"),
        Filter(
            "camera_model", "camera_model = {camera_model:String}", "photos taken with this camera model (EXIF, exact)"
        ),
        Filter(
            "keywords_any",
            "hasAny(keywords, {keywords_any:Array(String)})",
            "photos tagged with any of these keywords",
            option="--keyword",
            metavar="KW",
        ),
        Filter(
            "keywords_all",
            "hasAll(keywords, {keywords_all:Array(String)})",
            "photos tagged with every one of these keywords",
            option="--all-keywords",
            metavar="KW",
        ),
        Filter(
            "color",
            "color = {color:String}",
            "photos whose dominant color (the keyword of the largest coverage) is this, e.g. black",
        ),
        Filter(
            "has_description",
            "(coalesce(length(description), 0) > 0) = {has_description:Bool}",
            "only photos with (true) or without (false) a description",
        ),
    )
}


class Filters:
    """Optional metadata filters, the same for every query kind: one value per entry of
    :data:`FILTERS`, read as attributes (``filters.country``); a filter not set reads None
    (a list filter: ()).

    ``Filters(country="Iceland")`` takes the values as given (names checked); :meth:`of`
    also checks and normalizes them (strings match exactly; dates are UTC calendar days,
    both ends inclusive; keyword lists become tuples). Immutable, equal by value.

    Raises:
        BadArgument: a name that is not in :data:`FILTERS` (``unknown filter NAME; filters are ...``).
    """

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(FILTERS))
        if unknown:
            raise BadArgument(f"unknown filter {', '.join(unknown)}; filters are {', '.join(sorted(FILTERS))}")
        # Only the filters that are set are kept: an empty list or tuple is "not set" too.
        kept = {name: value for name, value in values.items() if not _is_off(value)}
        object.__setattr__(self, "_values", kept)

    @classmethod
    def of(cls, filters: Filters | None = None, **values: Any) -> Filters:
        """`filters` with `values` (filters by name; None switches one off) applied on top, checked.

        Raises:
            BadArgument: an unknown filter name, `filters` not a Filters, or a value of the
                wrong type or range.
        """
        if filters is not None and not isinstance(filters, Filters):
            raise BadArgument(f"filters must be a clipsql.search.Filters, got {type(filters).__name__}")
        base = filters or cls()
        return cls(**{**base._values, **values}).checked()

    def replace(self, **values: Any) -> Filters:
        """A copy with `values` set (None switches a filter off), not checked (see :meth:`of`)."""
        return Filters(**{**self._values, **values})

    def checked(self) -> Filters:
        """A copy with every value checked and normalized (:meth:`Filter.check`), and each
        lower bound checked against its upper bound (``not_after``).

        Raises:
            BadArgument: a value of the wrong type or range, or a lower bound above its upper one.
        """
        out = {name: FILTERS[name].check(value) for name, value in self._values.items()}
        for name, value in out.items():
            upper = FILTERS[name].not_after
            if upper is not None and not _is_off(value) and not _is_off(out.get(upper)) and value > out[upper]:
                if isinstance(value, dt.date):
                    raise BadArgument(f"{name} {value} is after {upper} {out[upper]}")
                raise BadArgument(f"{name} is larger than {upper}")
        return Filters(**out)

    def __getattr__(self, name: str) -> Any:
        spec = FILTERS.get(name)
        if spec is None:
            raise AttributeError(f"Filters has no filter {name!r}; filters are {', '.join(sorted(FILTERS))}")
        return self._values.get(name, spec.off)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Filters is immutable; use Filters.of(filters, name=value)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Filters) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Filters(" + ", ".join(f"{name}={value!r}" for name, value in self.items()) + ")"

    def __reduce__(self) -> tuple:
        # Pickle and copy by value (the default would set the slot past __setattr__).
        return (_filters_from, (dict(self._values),))

    def _key(self) -> tuple:
        return tuple((n, tuple(v) if isinstance(v, list) else v) for n, v in sorted(self._values.items()))

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of each filter that is set, in registry order."""
        return ((name, self._values[name]) for name in FILTERS if name in self._values)

    @property
    def active(self) -> bool:
        """True when at least one filter is set."""
        return bool(self._values)

    def params(self) -> dict[str, Any]:
        """The bound values of the filters that are set: {name: value}, lists as lists."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in self.items()}

    def conditions(self) -> tuple[tuple[str, Parameter], ...]:
        """(condition, parameter) of each filter that is set, in registry order: what
        :meth:`clipsql.queries.NamedQuery.with_filters` puts in a query."""
        return tuple((FILTERS[name].condition, FILTERS[name].parameter) for name, _ in self.items())


def _filters_from(values: dict[str, Any]) -> Filters:
    return Filters(**values)


def _is_off(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and len(value) == 0)


# --- the reference and console text -------------------------------------------------------

#: The example of console_filters: a query file and the filters it is run with.
CONSOLE_EXAMPLE: tuple[str, dict[str, Any]] = ("similar_photos", {"country": "Iceland", "orientation": "landscape"})


def filters_markdown() -> str:
    """The filter table of docs/search.md: one row per entry of :data:`FILTERS` (Python
    keyword, CLI option, SQL condition over photo_search, meaning). tests/test_filter_registry.py
    checks the page holds it.

    Returns:
        Markdown text ending in a newline.
    """
    rows = ["| Python | CLI | SQL over `photo_search` | keeps |", "| --- | --- | --- | --- |"]
    rows += [f"| `{f.name}` | `{f.usage}` | `{f.condition}` | {f.help} |" for f in FILTERS.values()]
    return "\n".join(rows) + "\n"


def console_filters(queries: Mapping | None = None, *, client: str = "clickhouse-client") -> str:
    """The filters at the SQL console (docs/console.md, `clipsql sql --console`): which query
    files take them, one comment line per filter (its CLI option and its condition), and a
    clickhouse-client command that runs one such file with two filters, the conditions put in
    place of its ``-- @filters`` line with sed.

    Args:
        queries: the named queries (default: every file of queries/).
        client: the console client's command.

    Returns:
        Shell text ending in a newline.
    """
    from ..queries import console_value

    queries = load_queries() if queries is None else queries
    takers = sorted(name for name, query in queries.items() if query.takes_filters)
    width = max(len(f.usage) for f in FILTERS.values())
    lines = [
        f"# Filters, for {', '.join(takers)}:",
        "# put 'AND <condition>' in place of the file's '-- @filters' line and pass the parameter",
        "# (--param_country=Iceland), or print the file so: clipsql sql --query NAME --country Iceland.",
        "# CLI option, then condition:",
    ]
    lines += [f"#   {f.usage:<{width}}  {f.condition}" for f in FILTERS.values()]
    name, example = CONSOLE_EXAMPLE
    query = queries[name]
    checked = Filters.of(None, **example)
    words = [client] + [f"--param_{p}={console_value(param)}" for p, param in query.parameters.items()]
    words += [f"--param_{f}={FILTERS[f].console_value(v)}" for f, v in checked.items()]
    conditions = " AND ".join(condition for condition, _ in checked.conditions())
    # Anchored at the line start: the header's prose may quote the marker.
    words.append(f"--query \"$(sed 's/^ *-- @filters.*/AND {conditions}/' queries/{query.path.name})\"")
    lines += ["", f"# {name} with {', '.join(f'{f}={v!r}' for f, v in checked.items())}:", " \\\n    ".join(words)]
    return "\n".join(lines) + "\n"
