"""Types: the type checker (mypy, configured in pyproject.toml's [tool.mypy]) finds nothing in
src/clipsql. It runs as the test command's part so that a change that breaks a signature's
contract fails here, not in a user's editor."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_nothing(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]' installs it)")
    # A fresh cache: the answer must not depend on an earlier run's (about 80 s cold on 2 cores).
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
