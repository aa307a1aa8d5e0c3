"""README's two opening commands: the second (the tests) is what CI runs, word for word."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def opening_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"```\n(.*?)```", text, flags=re.S)[:2]]


def test_ci_runs_the_readme_test_command_exactly():
    setup_and_run, tests = opening_commands()
    assert tests.endswith("-m pytest -q tests")
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_both_opening_commands_start_from_a_fresh_machine():
    for command in opening_commands():
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && ")
    assert opening_commands()[0].endswith(".venv/bin/clipsql refresh")


def test_only_the_second_opening_command_is_about_tests():
    # CI finds "the README's test command" by what the commands say: the main job's setup
    # installs the package alone (its runtime needs no test extra), so only one command names tests.
    setup_and_run, tests = opening_commands()
    assert "test" not in setup_and_run and "pytest" in tests
