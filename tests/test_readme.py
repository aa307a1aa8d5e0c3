"""README's two opening commands: the second (the tests) is what CI runs, word for word. And the
README stays a short front page whose links reach every page of docs/ (the manual)."""

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


# The README is the front page (two commands, a first search, links); the manual is docs/.

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 10_000
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(path: Path) -> list[str]:
    """The targets of the markdown links in `path` that point into the repository."""
    links = LINK.findall(_outside_code(path.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def _outside_code(text: str) -> str:
    kept, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            kept.append(line)
    return "\n".join(kept)


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    headings = re.findall(r"^#+ +(.+?) *$", _outside_code(path.read_text(encoding="utf-8")), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_stays_under_10_kb():
    size = len(README.read_bytes())
    assert size < README_MAX_BYTES, (
        f"README.md is {size} bytes: keep it to the two commands, a first search and links; move the rest to docs/"
    )


def test_readme_links_every_docs_page_and_each_link_exists():
    linked = {link.split("#")[0] for link in _relative_links(README) if link.startswith("docs/")}
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert sorted(link for link in linked if not (ROOT / link).is_file()) == []
    assert sorted(pages - linked) == [], "every docs/*.md page is linked from README.md"


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for link in _relative_links(page):
            file, _, anchor = link.partition("#")
            target = (page.parent / file).resolve() if file else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert broken == []
