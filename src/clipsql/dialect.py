"""The one place where engines differ at query time: ClickHouse query text -> DuckDB.

The queries in queries/ are written once, in ClickHouse's dialect, with `{name:Type}`
parameters. ClickHouse and chdb run them verbatim. For DuckDB this module

- rewrites each `{name:Type}` into `CAST($name AS <DuckDB type>)`, so DuckDB binds the
  same named values with the declared type (a NULL of a Nullable filter included);
- drops the ClickHouse-only clauses `FINAL` (DuckDB tables hold one row per key already,
  see sql/duckdb/) and a trailing `SETTINGS ...`;
- drops a `LIMIT ... WITH TIES` line (DuckDB has no WITH TIES). The queries use it only in
  a subquery whose rows the outer query sorts and limits again, so without it DuckDB ranks
  every row and returns the same result, only slower;
- defines macros (:data:`DUCKDB_MACROS`) for the ClickHouse functions the queries use.

Anything else a query needs must be written in the common subset of both dialects.

MyScale (:func:`to_myscale`, :func:`myscale_ddl`) is a text-only target: its DDL is generated
from sql/clickhouse/ and a query becomes its `distance()` form; neither is run here
(golden-tested only).
"""

from __future__ import annotations

import re

from .errors import BadArgument, QueryFileError

# `{name:Type}` parameters: the SQL files' syntax, clipsql.sqlfiles'; `from clipsql.dialect
# import PARAMETER_RE` works as before.
from .sqlfiles import PARAMETER_RE

_SCALARS = {
    "String": "VARCHAR",
    "LowCardinality(String)": "VARCHAR",
    "UUID": "UUID",
    "UInt8": "UTINYINT",
    "UInt16": "USMALLINT",
    "UInt32": "UINTEGER",
    "UInt64": "UBIGINT",
    "Int8": "TINYINT",
    "Int16": "SMALLINT",
    "Int32": "INTEGER",
    "Int64": "BIGINT",
    "Float32": "FLOAT",
    "Float64": "DOUBLE",
    "Bool": "BOOLEAN",
    "Date": "DATE",
    "DateTime": "TIMESTAMP",
    "DateTime64(3)": "TIMESTAMP",
}

#: ClickHouse functions the queries use, as DuckDB macros (same names, same meaning).
DUCKDB_MACROS = (
    # cosineDistance(a, b) = 1 - cos(a, b) (ClickHouse docs, "Distance functions").
    "CREATE OR REPLACE MACRO cosineDistance(a, b) AS 1.0 - list_cosine_similarity(a, b)",
    "CREATE OR REPLACE MACRO L2Distance(a, b) AS list_distance(a, b)",
    "CREATE OR REPLACE MACRO dotProduct(a, b) AS list_dot_product(a, b)",
    "CREATE OR REPLACE MACRO L2Norm(a) AS sqrt(list_dot_product(a, a))",
    # has(array, x): 1 if x is an element of array (ClickHouse "Arrays" functions).
    "CREATE OR REPLACE MACRO has(arr, x) AS list_contains(arr, x)",
    # hasAny(array, xs) / hasAll(array, xs): 1 if array holds any / every element of xs.
    "CREATE OR REPLACE MACRO hasAny(arr, xs) AS list_has_any(arr, xs)",
    "CREATE OR REPLACE MACRO hasAll(arr, xs) AS list_has_all(arr, xs)",
    # arrayDistinct(array): the distinct elements (only its length is used; order is irrelevant).
    "CREATE OR REPLACE MACRO arrayDistinct(arr) AS list_distinct(arr)",
    # toDate(DateTime64 in UTC): the UTC calendar date, whatever DuckDB's session TimeZone is
    # (a plain CAST of a TIMESTAMPTZ to DATE would use the session zone).
    "CREATE OR REPLACE MACRO toDate(ts) AS CAST(timezone('UTC', ts) AS DATE)",
)


def duckdb_type(clickhouse_type: str) -> str:
    """The DuckDB type of a ClickHouse parameter type (Nullable and Array understood).

    Raises:
        QueryFileError: a type outside the supported list.
    """
    text = clickhouse_type.replace(" ", "")
    if text.startswith("Nullable(") and text.endswith(")"):
        return duckdb_type(text[len("Nullable(") : -1])
    if text.startswith("Array(") and text.endswith(")"):
        return duckdb_type(text[len("Array(") : -1]) + "[]"
    for name, duck in _SCALARS.items():
        if text == name.replace(" ", ""):
            return duck
    raise QueryFileError(f"parameter type {clickhouse_type!r} has no DuckDB equivalent in clipsql.dialect")


_FINAL_RE = re.compile(r"\bFINAL\b")
#: A trailing SETTINGS clause; by convention it starts its own line at the end of a query.
_SETTINGS_RE = re.compile(r"^[ \t]*SETTINGS\b.*\Z", re.DOTALL | re.MULTILINE)
#: A `LIMIT ... WITH TIES` line (by convention the clause has a line of its own).
_WITH_TIES_RE = re.compile(r"^[ \t]*LIMIT\b[^\n]*\bWITH[ \t]+TIES[ \t]*$", re.MULTILINE)


def to_duckdb(sql: str) -> str:
    """Rewrite a ClickHouse query text for DuckDB (see the module docstring)."""
    sql = PARAMETER_RE.sub(lambda m: f"CAST(${m.group(1)} AS {duckdb_type(m.group(2))})", sql)
    sql = _FINAL_RE.sub("", sql)
    sql = _WITH_TIES_RE.sub("", sql)
    return _SETTINGS_RE.sub("", sql.rstrip().rstrip(";")).rstrip()


#: MyScale index types: MSTG (MyScale Cloud) and SCANN (the open-source MyScaleDB build).
MYSCALE_INDEX_TYPES = ("MSTG", "SCANN")
_COSINE_RE = re.compile(r"\bcosineDistance\(")
#: A SETTINGS line of ClickHouse's vector search (vector_search_filter_strategy,
#: vector_search_with_rescoring, ...), settings MyScale does not have.
_MYSCALE_SETTINGS_RE = re.compile(r"^\s*SETTINGS\s+vector_search_\w+\s*=.*$")


def to_myscale(sql: str) -> str:
    """A ClickHouse query text in MyScale's form: `distance(column, query)` ranks by the
    column's VECTOR INDEX metric (Cosine in sql/myscale/, so the same 1 - cos values), and
    the ClickHouse vector-search SETTINGS lines, settings MyScale does not have, are dropped.
    Text only: clipsql does not run MyScale.
    """
    sql = _COSINE_RE.sub("distance(", sql)
    return "\n".join(line for line in sql.rstrip().splitlines() if not _MYSCALE_SETTINGS_RE.match(line)) + "\n"


#: The vector index clause of sql/clickhouse/ (HNSW over cosineDistance), which MyScale does not have.
_HNSW_INDEX_RE = re.compile(
    r"INDEX (\w+) (\w+) TYPE vector_similarity\('hnsw', 'cosineDistance', \d+\)(?: GRANULARITY \d+)?"
)
_MYSCALE_HEADER = """\
-- clipsql store on MyScale (a ClickHouse fork with its own vector indexes), generated from
-- sql/clickhouse/ by clipsql.dialect.myscale_ddl: the same tables and comments, with each HNSW
-- index replaced by MyScale's `VECTOR INDEX ... TYPE {kind}('metric_type=Cosine')` (MSTG on
-- MyScale Cloud, SCANN in the open-source MyScaleDB build). Its Cosine metric makes
-- `distance(embedding, q)` the same 1 - cos(embedding, q) that cosineDistance gives on
-- ClickHouse; MyScale requires the CHECK on the vector length that the tables already have.
-- Text only: clipsql prints it (`clipsql sql --dialect myscale`) and does not run MyScale.

"""


def myscale_ddl(ddl: str, index_type: str = "MSTG") -> str:
    """The MyScale form of ClickHouse DDL (the text of sql/clickhouse/*.sql): every HNSW
    `INDEX name column TYPE vector_similarity('hnsw', 'cosineDistance', d)` becomes
    `VECTOR INDEX column_vector_index column TYPE MSTG|SCANN('metric_type=Cosine')`, under a
    header that says so. Generated rather than kept as a second copy of the DDL, so the two
    cannot drift apart.

    Raises:
        BadArgument: an index type other than MSTG or SCANN.
    """
    kind = str(index_type).upper()
    if kind not in MYSCALE_INDEX_TYPES:
        raise BadArgument(f"MyScale index type must be one of {', '.join(MYSCALE_INDEX_TYPES)}, got {index_type!r}")
    body = _HNSW_INDEX_RE.sub(
        lambda m: f"VECTOR INDEX {m.group(2)}_vector_index {m.group(2)} TYPE {kind}('metric_type=Cosine')", ddl
    )
    return _MYSCALE_HEADER.format(kind=kind) + body
