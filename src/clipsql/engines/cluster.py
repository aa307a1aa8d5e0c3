"""The cluster form of a ClickHouse store: the DDL of sql/clickhouse/ rewritten, statement by
statement, for a cluster of shards and replicas (issue 16, part 3). One source of truth: the
single-node files are the only DDL; this module derives the cluster's from them, and
tests/golden/cluster_ddl.sql holds what it derives for the cluster `clipsql`.

A store URL with `?cluster=NAME` (`http://user:password@host:8123/unsplash?cluster=clipsql`)
opens a cluster store (:mod:`clipsql.engines.clickhouse`): every statement clipsql runs there
(its migrations, the refresh's scripts, the approximate-index upkeep, a console's DDL) passes
through :func:`cluster_statements`. The layout, decided per table from the DDL itself:

- A table with a `photo_id` column (photos, keywords, collections, colors, conversions,
  photo_embeddings, download_status, photo_embeddings_ann_<dim>) becomes a local table
  `<name>_local` on every host, a ReplicatedReplacingMergeTree whose Keeper path names the
  shard (`/clickhouse/tables/{shard}/<database>/<name>_local`, replica `{replica}`), and a
  Distributed table `<name>` over them, sharded by `cityHash64(photo_id)`. The Distributed
  table carries the name the queries use, so queries/*.sql run unchanged; every row of a
  photo, in every table and in every version, lands on one shard, so FINAL (which a
  Distributed table runs on each shard) keeps one row per key, and the joins on photo_id
  inside photo_search find their rows on the same shard.
- Any other table (models, etl_runs, schema_migrations, the eval_* tables) is small and is read
  whole by the queries that join it: one ReplicatedReplacingMergeTree `<name>` of which every
  host is a replica (`/clickhouse/tables/all/<database>/<name>`, replica `{shard}-{replica}`,
  unique in the cluster even where the replica names repeat per shard).
- A view over tables with photo_id (photo_search) becomes a view `<name>_local` over the local
  tables on every host, and a Distributed table `<name>` over those views: each shard joins its
  own rows; a view over other tables only is created on every host as it is.
- ALTER TABLE of a sharded table runs ON CLUSTER on its local tables, and, for a column change,
  on its Distributed tables too (a Distributed table takes only column changes); of another
  table, once (Keeper replicates it to every host).
- DELETE FROM a sharded table runs ON CLUSTER on its local tables, the sharded tables its
  condition reads taken locally too: the condition of clipsql's deletes picks photos by their
  own rows, which are on the same shard.
- Anything else (INSERT, SELECT, temporary tables) runs as written, over the Distributed tables.

Every name written into a statement is an identifier checked here (the cluster, the database,
a table of the store's own DDL, a `{name:Identifier}` value), never a user's free text.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from ..errors import BadArgument, StoreError
from ..resources import sql_dir
from ..sqlfiles import split_statements
from .base import check_width

#: The store URL's query parameter naming the cluster (removed before the URL reaches
#: clickhouse-connect, which would send it to the server as a setting).
CLUSTER_PARAMETER = "cluster"
#: The suffix of a sharded table's local (replicated) tables and of a sharded view's local views.
LOCAL_SUFFIX = "_local"
#: The sharding key of every Distributed table over a table with a photo_id column.
SHARDING_KEY = "cityHash64(photo_id)"
#: The Keeper path of a sharded table's local tables: one replication group per shard.
SHARDED_PATH = "/clickhouse/tables/{{shard}}/{database}/{table}"
SHARDED_REPLICA = "{replica}"
#: The Keeper path of a table every host holds whole: one replication group for the cluster.
EVERY_HOST_PATH = "/clickhouse/tables/all/{database}/{table}"
EVERY_HOST_REPLICA = "{shard}-{replica}"
#: The session settings of a cluster store's client (clipsql.engines.clickhouse.connect_server):
#: `distributed_product_mode = 'global'`: a JOIN or IN whose both sides read Distributed tables
#: computes its right side once and sends it to the shards, so every query answers as on one
#: server (the server's default, 'deny', refuses such queries; 'local' would take each shard's
#: own rows, wrong for a subquery that picks a top-k, as queries/facets.sql does);
#: `distributed_foreground_insert = 1`: an insert into a Distributed table returns once every
#: shard has its rows, so the refresh reads what it wrote.
CLUSTER_SETTINGS: Mapping[str, object] = {"distributed_product_mode": "global", "distributed_foreground_insert": 1}
#: The vector widths the printed DDL shows an approximate-index table for (CLIP ViT-B/32).
DDL_EXAMPLE_WIDTHS = (512,)

_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER_PARAMETER_RE = re.compile(r"\{(\w+):Identifier\}")
_TABLE = r"(?P<name>\w+|\{\w+:Identifier\})"
_CREATE_TABLE_RE = re.compile(r"\ACREATE TABLE (?P<ine>IF NOT EXISTS )?(?P<name>\w+)(?P<rest>\s*\(.*)\Z", re.S)
_ENGINE_RE = re.compile(r"\bENGINE = ReplacingMergeTree(?:\((?P<version>\w*)\))?(?=\s|\Z)")
_CREATE_VIEW_RE = re.compile(r"\ACREATE VIEW (?P<ine>IF NOT EXISTS )?(?P<name>\w+) AS\b(?P<select>.*)\Z", re.S)
_ALTER_RE = re.compile(rf"\AALTER TABLE {_TABLE}\s+(?P<commands>.*)\Z", re.S)
_DELETE_RE = re.compile(rf"\ADELETE FROM {_TABLE}\s+(?P<where>WHERE\b.*)\Z", re.S)
#: A table read by a statement: `FROM name` or `JOIN name`, not `FROM db.name`, not `FROM f(`.
_TABLE_REF_RE = re.compile(r"\b(?P<keyword>FROM|JOIN)\s+(?P<name>\w+)\b(?!\s*[.(])")
_PHOTO_ID_COLUMN_RE = re.compile(r"^\s*photo_id\s+\w", re.M)
_COLUMN_COMMAND_RE = re.compile(r"\A(?:ADD|DROP|MODIFY|COMMENT|RENAME|CLEAR)\s+COLUMN\b", re.I)
#: Statements that change the schema or delete rows: strict mode refuses those it has no form for.
_DDL_RE = re.compile(r"\A(?:CREATE|ALTER|DELETE|DROP|TRUNCATE|RENAME|EXCHANGE|ATTACH|DETACH)\b", re.I)
_TEMPORARY_RE = re.compile(r"\A(?:CREATE|DROP)\s+TEMPORARY\b", re.I)


def check_identifier(value: object, what: str) -> str:
    """`value` when it is an identifier ClickHouse takes unquoted: letters, digits and _, not
    starting with a digit.

    Raises:
        BadArgument: anything else, naming `what` (e.g. 'cluster name') and the value.
    """
    if not isinstance(value, str) or not _IDENTIFIER_RE.fullmatch(value):
        raise BadArgument(f"{what} must be letters, digits and _ (not starting with a digit), got {value!r}")
    return value


def check_cluster(name: object) -> str:
    """`name` as a cluster name (a `<remote_servers>` entry of the servers' config).

    Raises:
        BadArgument: not an identifier (letters, digits and _, not starting with a digit).
    """
    return check_identifier(name, "ClickHouse cluster name")


def split_cluster(url: str) -> tuple[str, str | None]:
    """(the URL without its `cluster=` parameter, the cluster it names or None).

    The other query parameters are kept as written (clickhouse-connect reads them as settings).

    Raises:
        BadArgument: `cluster=` given twice, empty, or not an identifier.
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    query, hash_sign, fragment = query.partition("#")
    kept, names = [], []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if urllib.parse.unquote_plus(key) == CLUSTER_PARAMETER:
            names.append(urllib.parse.unquote_plus(value))
        elif item:
            kept.append(item)
    if not names:
        return url, None
    if len(names) > 1:
        raise BadArgument(f"the store URL names {len(names)} clusters ({', '.join(map(repr, names))}); give one")
    cluster = check_identifier(names[0], "ClickHouse cluster name (the store URL's cluster=)")
    rest = "&".join(kept)
    return base + (f"?{rest}" if rest else "") + (f"#{fragment}" if hash_sign else ""), cluster


# --- the store's tables, from its own DDL ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each table of the store lives on a cluster, read from sql/clickhouse/.

    Attributes:
        sharded: tables with a photo_id column: local tables per shard + a Distributed table.
        every_host: the other tables: one replicated table, whole on every host.
        sharded_views: views that read a sharded table: local views + a Distributed table.
        sharded_patterns: name patterns of tables made per vector width
            (`photo_embeddings_ann_<dim>`), sharded like the template they come from.
    """

    sharded: frozenset[str]
    every_host: frozenset[str]
    sharded_views: frozenset[str]
    sharded_patterns: tuple[re.Pattern[str], ...]

    def is_sharded(self, name: str) -> bool:
        """Whether `name` is a sharded table or view (its rows spread over the shards)."""
        return (
            name in self.sharded
            or name in self.sharded_views
            or any(pattern.fullmatch(name) for pattern in self.sharded_patterns)
        )

    def knows(self, name: str) -> bool:
        """Whether `name` is a table or view of the store."""
        return self.is_sharded(name) or name in self.every_host


def ddl_files() -> list[tuple[str, str]]:
    """The single-node DDL a fresh store runs, in order, as (path under sql/, text):
    sql/clickhouse/schema_migrations.sql, then the numbered migrations NNN_*.sql (the order
    :func:`clipsql.db.migrate` applies them in)."""
    folder = sql_dir() / "clickhouse"
    files = [folder / "schema_migrations.sql"] + sorted(folder.glob("[0-9][0-9][0-9]_*.sql"))
    return [(f"clickhouse/{path.name}", path.read_text(encoding="utf-8")) for path in files]


def ann_template() -> str:
    """sql/clickhouse/vector_index/create_ann_table.sql: the per-width approximate-index table."""
    return (sql_dir() / "clickhouse" / "vector_index" / "create_ann_table.sql").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def store_layout() -> Layout:
    """The :class:`Layout` of the store's tables, from the CREATE statements of its DDL files.

    Raises:
        StoreError: the approximate-index template names no per-width table with photo_id.
    """
    sharded: set[str] = set()
    every_host: set[str] = set()
    views: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for _, text in ddl_files():
        for statement in split_statements(text):
            if table := _CREATE_TABLE_RE.match(statement):
                (sharded if _PHOTO_ID_COLUMN_RE.search(table["rest"]) else every_host).add(table["name"])
            elif view := _CREATE_VIEW_RE.match(statement):
                reads = {m["name"] for m in _TABLE_REF_RE.finditer(view["select"])}
                if reads & sharded:
                    views.add(view["name"])
                else:
                    every_host.add(view["name"])
    template = split_statements(ann_template())[0]
    name = re.match(r"\ACREATE TABLE (?:IF NOT EXISTS )?(\w+<dim>)", template)
    if name is None or not _PHOTO_ID_COLUMN_RE.search(template):
        raise StoreError("sql/clickhouse/vector_index/create_ann_table.sql: no per-width table with photo_id")
    patterns.append(re.compile(re.escape(name[1]).replace("<dim>", r"\d+")))
    return Layout(frozenset(sharded), frozenset(every_host), frozenset(views), tuple(patterns))


# --- the rewrite ------------------------------------------------------------------------------


def cluster_statements(
    statement: str,
    cluster: str,
    database: str,
    parameters: Mapping[str, object] | None = None,
    *,
    strict: bool = False,
) -> list[str]:
    """The statements that do on a cluster what `statement` (one statement of clipsql's
    ClickHouse dialect, as :func:`clipsql.sqlfiles.split_statements` gives them) does on one
    server (the module docstring says how). Value parameters (`{name:Type}`) stay in place, to
    be bound as before; a `{name:Identifier}` naming a table of a DDL statement is written in
    from `parameters` (a table name, checked).

    Args:
        statement: the single-node statement (`--` comment lines are left out of its cluster form).
        cluster: the cluster name (`<remote_servers>`), an identifier.
        database: the store's database, an identifier.
        parameters: the statement's parameters (only `{name:Identifier}` ones are read).
        strict: refuse a statement that changes the schema or deletes rows but has no cluster
            form here (a CREATE TABLE with another engine, an ALTER mixing column and other
            commands, a DROP, ...); otherwise such a statement runs as written (a console user's
            own table).

    Returns:
        One or more statements, in the order to run them.

    Raises:
        BadArgument: a cluster or database name that is not an identifier; a
            `{name:Identifier}` without a value that is a table of the store; with `strict`, a
            statement without a cluster form.
    """
    cluster = check_cluster(cluster)
    database = check_identifier(database, "ClickHouse database name")
    # The statement's code: a script's file is passed whole, its comment lines included.
    text = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
    text = text.strip().rstrip(";").strip()
    if _CREATE_TABLE_RE.match(text) or _CREATE_VIEW_RE.match(text) or _ALTER_RE.match(text) or _DELETE_RE.match(text):
        text = _with_identifiers(text, parameters or {})
    layout = store_layout()
    rewrite = _Rewrite(cluster, database, layout)
    for form in (rewrite.create_table, rewrite.create_view, rewrite.alter, rewrite.delete):
        result = form(text)
        if result is not None:
            return result
    if strict and _DDL_RE.match(text) and not _TEMPORARY_RE.match(text):
        raise BadArgument(f"no cluster form for this statement (clipsql.engines.cluster): {_first_line(text)}")
    return [statement]


def cluster_ddl(cluster: str, database: str, widths: Iterable[int] = DDL_EXAMPLE_WIDTHS) -> str:
    """The DDL of a fresh cluster store: every statement of sql/clickhouse/ (the record of
    migrations, then each numbered migration in order) in its cluster form, then the
    approximate-index table of each of `widths` (made by the first refresh that loads vectors of
    that width). What a cluster store runs when first opened; golden-tested
    (tests/golden/cluster_ddl.sql, for `cluster_ddl('clipsql', 'unsplash')`).

    Raises:
        BadArgument: a cluster or database name that is not an identifier, a width that is not
            an integer in 1..65535, or a statement of the DDL files without a cluster form.
    """
    cluster = check_cluster(cluster)
    database = check_identifier(database, "ClickHouse database name")
    widths = [check_width(w) for w in widths]
    blocks = [_HEADER.format(cluster=cluster, database=database)]
    sources = [(f"sql/{path}", text) for path, text in ddl_files()]
    sources += [
        (f"sql/clickhouse/vector_index/create_ann_table.sql, vectors {w} wide", fill_width(ann_template(), w))
        for w in widths
    ]
    for where, text in sources:
        statements = [
            s for part in split_statements(text) for s in cluster_statements(part, cluster, database, strict=True)
        ]
        blocks.append(f"-- {where}\n" + "".join(f"{s};\n\n" for s in statements))
    return "".join(blocks).rstrip("\n") + "\n"


def database_ddl(cluster: str, database: str) -> str:
    """`CREATE DATABASE IF NOT EXISTS <database> ON CLUSTER <cluster>` (both checked).

    Raises:
        BadArgument: a name that is not an identifier.
    """
    return (
        f"CREATE DATABASE IF NOT EXISTS {check_identifier(database, 'ClickHouse database name')} "
        f"ON CLUSTER {check_cluster(cluster)}"
    )


_HEADER = """\
-- clipsql store on the ClickHouse cluster {cluster}, database {database}: generated from
-- sql/clickhouse/ by clipsql.engines.cluster.cluster_ddl('{cluster}', '{database}') (docs/stores.md,
-- "A ClickHouse cluster"). Tables with photo_id: a ReplicatedReplacingMergeTree <name>_local per
-- shard and a Distributed <name> over them, sharded by cityHash64(photo_id); the other tables:
-- one ReplicatedReplacingMergeTree whole on every host; photo_search: a view <name>_local over the
-- local tables per shard and a Distributed table over those views. Comments of the source files
-- are left out; each statement keeps its source file's order.

"""


class _Rewrite:
    """The cluster forms of the four kinds of statement that have one (each returns None for a
    statement of another kind)."""

    def __init__(self, cluster: str, database: str, layout: Layout):
        self.cluster = cluster
        self.database = database
        self.layout = layout

    def _distributed(self, name: str, sharding_key: str | None) -> str:
        key = f", {sharding_key}" if sharding_key else ""
        db, c = self.database, self.cluster
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{name}{LOCAL_SUFFIX}\n"
            f"ENGINE = Distributed({c}, {db}, {name}{LOCAL_SUFFIX}{key})"
        )

    def _reads(self, text: str, *, local: bool) -> str:
        """`text` with every table of the store it reads qualified by the database; sharded ones
        by their local tables when `local`."""

        def qualify(m: re.Match[str]) -> str:
            name = m["name"]
            if not self.layout.knows(name):
                return m[0]
            suffix = LOCAL_SUFFIX if local and self.layout.is_sharded(name) else ""
            return f"{m['keyword']} {self.database}.{name}{suffix}"

        return _TABLE_REF_RE.sub(qualify, text)

    def create_table(self, text: str) -> list[str] | None:
        m = _CREATE_TABLE_RE.match(text)
        if m is None:
            return None
        name, rest = m["name"], m["rest"]
        engines = list(_ENGINE_RE.finditer(rest))
        if len(engines) != 1:  # another engine: no cluster form (strict mode refuses it)
            return None
        sharded = bool(_PHOTO_ID_COLUMN_RE.search(rest))
        table = name + LOCAL_SUFFIX if sharded else name
        path = (SHARDED_PATH if sharded else EVERY_HOST_PATH).format(database=self.database, table=table)
        replica = SHARDED_REPLICA if sharded else EVERY_HOST_REPLICA
        version = engines[0]["version"]
        arguments = f"'{path}', '{replica}'" + (f", {version}" if version else "")
        engine = f"ENGINE = ReplicatedReplacingMergeTree({arguments})"
        local = (
            f"CREATE TABLE {m['ine'] or ''}{self.database}.{table} ON CLUSTER {self.cluster}"
            + rest[: engines[0].start()]
            + engine
            + rest[engines[0].end() :]
        )
        return [local, self._distributed(name, SHARDING_KEY)] if sharded else [local]

    def create_view(self, text: str) -> list[str] | None:
        m = _CREATE_VIEW_RE.match(text)
        if m is None:
            return None
        name, select = m["name"], m["select"]
        sharded = any(self.layout.is_sharded(r["name"]) for r in _TABLE_REF_RE.finditer(select))
        view = name + LOCAL_SUFFIX if sharded else name
        head = f"CREATE VIEW {m['ine'] or ''}{self.database}.{view} ON CLUSTER {self.cluster} AS"
        local = head + self._reads(select, local=sharded)
        if not sharded:
            return [local]
        columns = select.split("FROM", 1)[0]
        return [local, self._distributed(name, SHARDING_KEY if re.search(r"\bphoto_id\b", columns) else None)]

    def alter(self, text: str) -> list[str] | None:
        m = _ALTER_RE.match(text)
        if m is None or not self.layout.knows(m["name"]):
            return None
        name, commands = m["name"], m["commands"]
        kinds = {bool(_COLUMN_COMMAND_RE.match(part.strip())) for part in _top_level_split(_before_settings(commands))}
        if len(kinds) != 1:
            return None  # column and other commands mixed: no cluster form
        if not self.layout.is_sharded(name):
            return [f"ALTER TABLE {self.database}.{name} {commands}"]
        local = f"ALTER TABLE {self.database}.{name}{LOCAL_SUFFIX} ON CLUSTER {self.cluster} {commands}"
        if kinds == {True}:
            return [local, f"ALTER TABLE {self.database}.{name} ON CLUSTER {self.cluster} {commands}"]
        return [local]

    def delete(self, text: str) -> list[str] | None:
        m = _DELETE_RE.match(text)
        if m is None or not self.layout.knows(m["name"]) or m["name"] in self.layout.sharded_views:
            return None
        name = m["name"]
        if not self.layout.is_sharded(name):
            return [f"DELETE FROM {self.database}.{name} {self._reads(m['where'], local=False)}"]
        where = self._reads(m["where"], local=True)
        return [f"DELETE FROM {self.database}.{name}{LOCAL_SUFFIX} ON CLUSTER {self.cluster} {where}"]


def _with_identifiers(text: str, parameters: Mapping[str, object]) -> str:
    """`text` with each `{name:Identifier}` replaced by its value, which must name a table of
    the store (the approximate-index tables are the only ones passed so today).

    Raises:
        BadArgument: no value, or a value that is not a table of the store.
    """

    def value(m: re.Match[str]) -> str:
        if m[1] not in parameters:
            raise BadArgument(f"{{{m[1]}:Identifier}} has no value")
        name = check_identifier(parameters[m[1]], f"{{{m[1]}:Identifier}}")
        if not store_layout().knows(name):
            raise BadArgument(f"{{{m[1]}:Identifier}} = {name!r} is not a table of the store")
        return name

    return _IDENTIFIER_PARAMETER_RE.sub(value, text)


def fill_width(template: str, dim: int) -> str:
    """`template` (the approximate-index DDL, :func:`ann_template`) with its `<dim>` filled in,
    comment lines left as they are. An integer checked here, written into the text because
    ClickHouse takes only literals as index arguments (a bound {dim:UInt32} is refused there).

    Raises:
        BadArgument: `dim` is not an integer in 1..65535.
    """
    width = str(check_width(dim))
    return "\n".join(
        line if line.lstrip().startswith("--") else line.replace("<dim>", width) for line in template.splitlines()
    )


def _top_level_split(text: str) -> list[str]:
    """`text` split on the commas outside parentheses and quotes (an ALTER's commands)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _before_settings(commands: str) -> str:
    """An ALTER's commands without a trailing `SETTINGS ...` clause."""
    return re.split(r"\bSETTINGS\b", commands, maxsplit=1)[0]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 120 else line[:117] + "..."
