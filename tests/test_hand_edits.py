"""A change an analyst makes by hand in SQL reaches search at once (issue 13, part 4).

Another process (`clipsql sql STATEMENT`, a real console's way in) flags a photo deleted and
edits another's description while this process holds the store with its search snapshot
built; the next search here, and the photo_search relation, show both changes. On
ClickHouse the edit is a newer version of the row (the ReplacingMergeTree way; an
`ALTER TABLE ... UPDATE` mutation would do too), on DuckDB a plain UPDATE."""

from __future__ import annotations

import numpy as np
import pytest

import searchdata
from clipsql import search
from clipsql.db import open_store
from etl_support import run_cli

N = 200
#: photos edited: the first is flagged deleted, the second gets a new description
GONE, EDITED = searchdata.photo_id(40), searchdata.photo_id(41)
EDITS = {
    "chdb": [
        "INSERT INTO photos SELECT * REPLACE (1 AS is_deleted, version + 1 AS version) "
        f"FROM photos FINAL WHERE photo_id = '{GONE}'",
        "INSERT INTO photos SELECT * REPLACE ('a red kite' AS photo_description, version + 1 AS version) "
        f"FROM photos FINAL WHERE photo_id = '{EDITED}'",
    ],
    "duckdb": [
        f"UPDATE photos SET is_deleted = 1 WHERE photo_id = '{GONE}'",
        f"UPDATE photos SET photo_description = 'a red kite' WHERE photo_id = '{EDITED}'",
    ],
}


@pytest.mark.parametrize("engine", ["chdb", "duckdb"])
def test_a_photo_flagged_deleted_and_a_description_edited_by_hand_reach_search(tmp_path, engine):
    location = tmp_path / "s.duckdb" if engine == "duckdb" else tmp_path / "store"
    db = open_store(tmp_path / "store", duckdb=str(location) if engine == "duckdb" else None)
    try:
        vectors = searchdata.load(db, N)
        query = vectors[40] + vectors[41]  # both photos at the top

        def top() -> dict[str, str]:
            frame = search.nearest(db, query, model=searchdata.MODEL, k=5)
            return dict(zip(frame["photo_id"], frame["description"].fillna("")))

        before = top()
        assert GONE in before and before[EDITED] == "photo 41"
        for statement in EDITS[engine]:
            done = run_cli("sql", statement, "--store", str(location), "--wait", "60")
            assert done.returncode == 0, done.stderr
        after = top()
        assert GONE not in after and after[EDITED] == "a red kite"
        assert set(after) - {EDITED} >= set(before) - {GONE, EDITED}
        relation = db.query_clickhouse(
            "SELECT photo_id, description FROM photo_search WHERE has({ids:Array(String)}, photo_id)",
            {"ids": [GONE, EDITED]},
        )
        assert relation.values.tolist() == [[EDITED, "a red kite"]]
        assert not np.isnan(search.nearest(db, query, model=searchdata.MODEL, k=1)["distance"][0])
    finally:
        db.close()
