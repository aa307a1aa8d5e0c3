"""The syntax of clipsql's SQL files, shared by the query registry (:mod:`clipsql.queries`),
the DuckDB dialect (:mod:`clipsql.dialect`) and the stores (:mod:`clipsql.db`): `{name:Type}`
parameters and statements split on `;` at line ends.
"""

from __future__ import annotations

import re

#: `{name:Type}` as ClickHouse's server-side parameter binding writes it.
PARAMETER_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([A-Za-z0-9_(), ]+?)\s*\}")


def uses_parameter(statement: str, name: str) -> bool:
    """Whether `statement` uses the parameter `name`, as `{name:Type}` (ClickHouse) or `$name` (DuckDB)."""
    return bool(re.search(r"\{\s*" + re.escape(name) + r"\s*:|\$" + re.escape(name) + r"\b", statement))


def split_statements(sql: str) -> list[str]:
    """Split a DDL file on `;` at line ends; `--` comment lines are dropped.

    The DDL files hold no string literal spanning a `;` line end, which keeps this simple.
    """
    statements, current = [], []
    for line in sql.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements
