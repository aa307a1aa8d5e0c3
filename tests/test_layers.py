"""The package's modules form layers that only import downward (issue 11).

Every module of src/clipsql and of its subpackages (`search.kinds` for
src/clipsql/search/kinds.py, `search` for its __init__.py) is read with `ast` (nothing is
imported here): every `import`
and `from ... import` statement, at module level and inside functions alike (a deferred
import is an import all the same), in relative and absolute form, and every
`importlib.import_module("clipsql...")` with a constant name, gives an edge of the module
import graph. The tests check that

(a) the graph has no cycle;
(b) every edge goes to a module of the same or a lower layer of :data:`LAYERS`;
(c) no module uses another clipsql module's private (`_name`) names: no `from .x import _name`,
    no `x._name` on a clipsql module, no `obj._name` of a private attribute that only another
    module defines (a field of a class of another module, e.g. a Store's);
(d) `import clipsql` and `import clipsql.udf` load none of the ETL (clipsql.refresh and the
    stages), in a fresh interpreter: the package's `__init__` loads `refresh`, `RefreshSummary`
    and `search` lazily, and the UDF's child process pays only for what it uses.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "clipsql"
PACKAGE_DIR = SRC / PACKAGE
#: The package's own `__init__` (the lazy facade: `from clipsql import refresh, search`).
INIT = "__init__"

#: The layers, lowest first; a module may import modules of its own layer or of a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "resources", "constants"),  # exceptions; where files live; constants several layers use
    # image decoding; the image cache's layout; the SQL files' syntax; model families,
    # precisions and their ONNX copies; the shards of a release; the download stage's settings
    ("images", "cache", "sqlfiles", "families", "precision", "onnx_towers", "shards", "download_options"),
    ("queries",),  # the named-query registry (reads queries/, needs no engine)
    ("dialect",),  # ClickHouse query text -> DuckDB (and MyScale)
    ("lock", "unrecorded"),  # the store's refresh lock; the runs that could not get the store
    ("engines.base", "engines.busy"),  # the engine protocol; who holds a busy store
    (
        "engines.clickhouse",
        "engines.duckdb",
        "engines.cluster",
    ),  # the engines ... (a cluster store: the ClickHouse engine's DDL rewritten)
    ("engines.chdb",),  # ... chdb is the ClickHouse engine in process
    ("engines",),  # the engine registry
    ("db",),  # stores: chdb, ClickHouse server, DuckDB
    ("embed",),  # the CLIP model
    ("download",),  # fetching images: the ETL's download stage, search's image URLs
    ("snapshot",),  # the search snapshot of a store
    # the search package (clipsql/search/), one concern per module:
    ("search.checks",),  # value checks and limits
    ("search.filters", "search.terms", "search.inputs", "search.vectors", "search.models", "search.memory"),
    ("search.options",),  # SearchOptions, FacetOptions, the keyword folding
    ("search.sql",),  # running the photo queries
    ("search.rerank", "search.model_rerank"),  # exact and MMR re-ranking; re-ranking by an image-text matching model
    ("search.kinds",),  # the query kinds
    ("search", "status", "render"),  # reading a store: search, its state, the notebooks' views
    ("evaluate", "udf"),  # built on search (combine_vectors, resolve_model)
    ("console",),  # the SQL console: statements through a store, clip_text_embedding registered
    ("sources",),  # ETL stages only the refresh uses: reading sources ...
    ("load",),  # ... and loading rows
    ("settings",),  # the refresh's settings tree (job file and CLI map onto it)
    ("ray_executor",),  # download and embed on Ray Data (imported by the refresh when asked)
    ("refresh",),  # the ETL job
    ("jobs",),  # job files -> refresh
    (INIT,),  # `clipsql`: refresh, RefreshSummary and search, loaded lazily
    ("cli_common",),  # the CLI's exit statuses
    ("cli_search", "cli_eval"),  # CLI subcommands
    ("cli",),  # the `clipsql` command
]
LAYER_OF = {module: number for number, layer in enumerate(LAYERS) for module in layer}
#: Modules whose import must not load these (in a fresh interpreter).
MUST_NOT_LOAD = {
    PACKAGE: ("refresh", "download", "sources", "load", "search", "db"),
    f"{PACKAGE}.udf": ("refresh", "download", "sources", "load", "search", "db"),
    # Every command line reads the settings: the HTTP stack (requests, urllib3) is the
    # download stage's alone (a cold text search does not pay for it).
    f"{PACKAGE}.cli": ("download", "refresh"),
}


def module_files() -> dict[str, Path]:
    """{short module name: file}: `errors` for clipsql/errors.py, `__init__` for the package;
    a subpackage's modules by dotted name: `search` for clipsql/search/__init__.py,
    `search.kinds` for clipsql/search/kinds.py (folders without an __init__.py are skipped)."""
    files = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if not all((PACKAGE_DIR.joinpath(*parts[:end]) / "__init__.py").is_file() for end in range(1, len(parts))):
            continue
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def package_of(path: Path) -> str:
    """The package a module's relative imports start from: `clipsql.search` for
    clipsql/search/kinds.py and for clipsql/search/__init__.py."""
    return ".".join(path.parent.relative_to(SRC).parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class ModuleScan(ast.NodeVisitor):
    """The imports, module bindings, private definitions and private attribute uses of one module."""

    def __init__(self, name: str, modules: set[str], package: str = PACKAGE):
        self.name = name
        self.modules = modules
        self.package = package  # where `from . import` starts (see package_of)
        # `from . import x` inside the package __init__ and in a module resolve alike: the package.
        self.imports: list[tuple[str, int]] = []  # (target module, line)
        self.private_imports: list[tuple[str, str, int]] = []  # (module, name, line)
        self.module_aliases: dict[str, str] = {}  # local name -> clipsql module it is bound to
        self.defined_private: set[str] = set()  # private names this module defines
        self.attribute_uses: list[tuple[ast.AST, str, int]] = []  # (value, attr, line) for `value._attr`
        self.classes: set[str] = set()  # names of the classes this module defines

    # -- imports ---------------------------------------------------------------------------
    def _target(self, dotted: str) -> str | None:
        """The short module name of `clipsql[.x[...]]` (the longest prefix that is a module:
        `search.kinds` for clipsql.search.kinds.text), else None (not ours)."""
        if dotted == PACKAGE:
            return INIT
        if dotted.startswith(PACKAGE + "."):
            parts = dotted[len(PACKAGE) + 1 :].split(".")
            for end in range(len(parts), 0, -1):
                name = ".".join(parts[:end])
                if name in self.modules and name != INIT:
                    return name
            return INIT
        return None

    def _module(self, dotted: str) -> str | None:
        """The short module name of `dotted` when it names a module itself, else None."""
        name = dotted[len(PACKAGE) + 1 :] if dotted.startswith(PACKAGE + ".") else None
        return name if name in self.modules and name != INIT else None

    def _add(self, target: str | None, line: int) -> None:
        if target is not None and target != self.name:
            self.imports.append((target, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            target = self._target(alias.name)
            self._add(target, node.lineno)
            if target is not None:
                if alias.asname:  # import clipsql.x as y: y is clipsql.x
                    self.module_aliases[alias.asname] = target
                # plain `import clipsql.x` binds `clipsql`: attribute chains are resolved below
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.package.split(".")
            base = package[: max(0, len(package) - (node.level - 1))]
            dotted = ".".join(base + ([node.module] if node.module else []))
        else:
            dotted = node.module or ""
        target = self._target(dotted)
        if target is None:
            return
        for alias in node.names:
            # from clipsql[.pkg] import x: a submodule x, else a name of the module imported from
            submodule = self._module(f"{dotted}.{alias.name}")
            if submodule is not None:
                self._add(submodule, node.lineno)
                self.module_aliases[alias.asname or alias.name] = submodule
            else:
                self._add(target, node.lineno)
                if _is_private(alias.name) and target != self.name:
                    self.private_imports.append((target, alias.name, node.lineno))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        is_import_module = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
            isinstance(func, ast.Name) and func.id == "import_module"
        )
        if (
            is_import_module
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            name = node.args[0].value
            if name.startswith("."):  # import_module(".x", __package__)
                name = PACKAGE + name if name != "." else PACKAGE
            self._add(self._target(name), node.lineno)
        self.generic_visit(node)

    # -- private definitions and uses ------------------------------------------------------
    def _define(self, target: ast.AST) -> None:
        if isinstance(target, ast.Name) and _is_private(target.id):
            self.defined_private.add(target.id)
        elif (
            isinstance(target, ast.Attribute)
            and _is_private(target.attr)
            and isinstance(target.value, ast.Name)
            and (target.value.id in ("self", "cls") or target.value.id in self.classes)
        ):
            # self._x = ..., cls._x = ..., Store._x = ... (a class of this module); not db._x = ...,
            # which writes another object's field
            self.defined_private.add(target.attr)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._define(element)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._define(target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._define(node.target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._define(node.target)
        self.generic_visit(node)

    def _define_name(self, node) -> None:
        if _is_private(node.name):
            self.defined_private.add(node.name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._define_name(node)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._define_name(node)
        self.classes.add(node.name)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_private(node.attr):
            self.attribute_uses.append((node.value, node.attr, node.lineno))
        self.generic_visit(node)


def scan_all() -> dict[str, ModuleScan]:
    files = module_files()
    scans = {}
    for name, path in files.items():
        scan = ModuleScan(name, set(files), package_of(path))
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        scans[name] = scan
    return scans


def import_graph(scans: dict[str, ModuleScan]) -> dict[str, dict[str, int]]:
    """{module: {imported module: first line}}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in scans}
    for name, scan in scans.items():
        for target, line in scan.imports:
            graph[name].setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """A cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per group of modules that import each other (strongly connected component)."""
    reach = {node: _reachable(graph, node) for node in graph}
    groups, seen = [], set()
    for node in sorted(graph):
        if node in seen or node not in reach[node]:
            continue
        group = {other for other in reach[node] if node in reach.get(other, ())} | {node}
        seen |= group
        sub = {a: {b: line for b, line in graph[a].items() if b in group} for a in group}
        groups.append(find_cycle(sub))
    return groups


def _reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    found, todo = set(), list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, ()))
    return found


def _label(module: str) -> str:
    return PACKAGE if module == INIT else f"{PACKAGE}.{module}"


def _where(module: str, line: int) -> str:
    path = module_files().get(module)
    return f"{path.relative_to(SRC.parent).as_posix() if path else module}:{line}"


# --- the tests -----------------------------------------------------------------------------


def test_every_module_has_a_layer():
    files = set(module_files())
    assert files, f"no modules found in {PACKAGE_DIR}"
    assert not files - set(LAYER_OF), f"modules without a layer in LAYERS: {sorted(files - set(LAYER_OF))}"
    assert not set(LAYER_OF) - files, f"LAYERS names modules that do not exist: {sorted(set(LAYER_OF) - files)}"
    duplicates = [m for layer in LAYERS for m in layer if sum(m in other for other in LAYERS) > 1]
    assert not duplicates, f"modules in two layers: {duplicates}"


def test_the_import_graph_has_no_cycle():
    graph = import_graph(scan_all())
    report = []
    for cycle in find_cycles(graph):
        steps = [f"{_label(a)} -> {_label(b)} ({_where(a, graph[a][b])})" for a, b in zip(cycle, cycle[1:])]
        report.append("import cycle: " + " -> ".join(_label(m) for m in cycle) + "\n  " + "\n  ".join(steps))
    assert not report, "\n".join(report)


def test_every_import_points_to_the_same_or_a_lower_layer():
    graph = import_graph(scan_all())
    upward = []
    for source, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if source in LAYER_OF and target in LAYER_OF and LAYER_OF[target] > LAYER_OF[source]:
                upward.append(
                    f"{_where(source, line)}: {_label(source)} (layer {LAYER_OF[source]} "
                    f"{LAYERS[LAYER_OF[source]]}) imports {_label(target)} (layer {LAYER_OF[target]} "
                    f"{LAYERS[LAYER_OF[target]]})"
                )
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_module_uses_another_modules_private_names():
    scans = scan_all()
    owners: dict[str, set[str]] = {}
    for name, scan in scans.items():
        for private in scan.defined_private:
            owners.setdefault(private, set()).add(name)
    found = []
    for name, scan in sorted(scans.items()):
        for target, private, line in scan.private_imports:
            found.append(f"{_where(name, line)}: imports {private} from {_label(target)}")
        for value, private, line in scan.attribute_uses:
            if isinstance(value, ast.Name) and value.id in scan.module_aliases:
                module = scan.module_aliases[value.id]
                if module != name:
                    found.append(f"{_where(name, line)}: uses {value.id}.{private} of {_label(module)}")
                continue
            if (
                isinstance(value, ast.Attribute)
                and isinstance(value.value, ast.Name)
                and value.value.id == PACKAGE
                and value.attr in scans
                and value.attr != name
            ):
                found.append(f"{_where(name, line)}: uses {PACKAGE}.{value.attr}.{private}")
                continue
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue  # its own object's: the class defines it (or a base class of its module)
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
                continue
            others = owners.get(private, set()) - {name}
            if others and name not in owners.get(private, set()):
                found.append(
                    f"{_where(name, line)}: uses .{private}, a private name of "
                    f"{', '.join(_label(o) for o in sorted(others))}"
                )
    assert not found, "private names used outside their module:\n" + "\n".join(found)


@pytest.mark.parametrize("module", sorted(MUST_NOT_LOAD))
def test_importing_does_not_load_the_etl(module):
    code = (
        f"import sys, json; import {module}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE + '.'!r}))))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    unwanted = [m for m in (f"{PACKAGE}.{name}" for name in MUST_NOT_LOAD[module]) if m in loaded]
    assert not unwanted, f"`import {module}` loads {unwanted} (all loaded: {loaded})"


def test_the_lazy_package_still_offers_refresh_and_search():
    # `from clipsql import refresh, search` (README, notebooks): the function and the module,
    # whether or not clipsql.refresh was imported first (which binds the submodule on the package).
    code = (
        "import json, types; import clipsql.refresh as first; from clipsql import refresh, search, RefreshSummary; "
        "import clipsql; import clipsql.search; "
        "print(json.dumps([callable(refresh) and not isinstance(refresh, types.ModuleType), "
        "refresh is clipsql.refresh, search is clipsql.search, isinstance(search, types.ModuleType), "
        "RefreshSummary.__name__, sorted(set(clipsql.__all__) - set(dir(clipsql)))]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    for program in (code, code.replace("import clipsql.refresh as first; ", "")):
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [True, True, True, True, "RefreshSummary", []]


def test_the_scan_sees_every_form_of_import():
    # The checks above are only as good as the scan: each form an import may take is an edge.
    source = """
import os
import clipsql
import clipsql.search as s
from clipsql import db, __version__
from clipsql.load import Loader
from . import cache
from .sources import _private_reader


def later():
    import clipsql.refresh
    from .embed import ClipEmbedder
    import importlib
    importlib.import_module(".jobs", __package__)
    return s._hidden, db.open_store, clipsql.status._state
"""
    modules = set(module_files())
    scan = ModuleScan("render", modules)
    scan.visit(ast.parse(source))
    assert {t for t, _ in scan.imports} == {
        INIT,
        "search",
        "db",
        "load",
        "cache",
        "sources",
        "refresh",
        "embed",
        "jobs",
    }
    assert [(m, n) for m, n, _ in scan.private_imports] == [("sources", "_private_reader")]
    assert scan.module_aliases["s"] == "search" and scan.module_aliases["db"] == "db"
    assert {attr for _, attr, _ in scan.attribute_uses} == {"_hidden", "_state"}
    # A module of a subpackage: `.` is the subpackage, `..` the package.
    inner = ModuleScan("search.kinds", modules | {"search", "search.kinds", "search.checks"}, f"{PACKAGE}.search")
    inner.visit(
        ast.parse(
            "from ..db import Store\nfrom .checks import _limit, check_k\nfrom . import checks\n"
            "from .. import snapshot\nimport clipsql.search.checks as c\n"
        )
    )
    assert {t for t, _ in inner.imports} == {"db", "search.checks", "snapshot"}
    assert [(m, n) for m, n, _ in inner.private_imports] == [("search.checks", "_limit")]
    assert inner.module_aliases == {"checks": "search.checks", "snapshot": "snapshot", "c": "search.checks"}
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
