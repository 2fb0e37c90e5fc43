"""The docs cannot drift from the tree: every file they name exists, and none points at a line.

A line number in a doc is stale at the next edit above it, so docs name modules and functions
instead. A path in backquotes must name a file of this repository (relative to the root, to
`codebase/`, to the package, to the tests, or to the doc itself), so renaming or removing a
module fails here until the docs follow.
"""

import os
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "codebase" / "src" / "btc_orders"
DOCS = sorted(
    [
        *ROOT.glob("docs/*.md"),
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        ROOT / "docker" / "local-images" / "README.md",
    ]
)
# A file named in backquotes: a path ending in one of the extensions the tree holds.
FILE = re.compile(r"`([A-Za-z0-9_.][A-Za-z0-9_./-]*\.(?:py|sh|sql|yml|yaml|md|json|lua|conf|txt|lock|toml))`")
# `something.py:123` or `something.py:12-30`, in backquotes or not.
LINE_REFERENCE = re.compile(r"\b[\w/.-]+\.(?:py|sh|sql|yml|yaml|conf|lua):\d+")
# Paths inside an image or a URL path, not files of this repository.
NOT_IN_THE_TREE = {
    "/openapi.json",  # a URL path every service serves
    "20-envsubst-on-templates.sh",  # the official nginx image's entrypoint hook
    "conf.d/default.conf",  # nginx's configuration directory inside the image
    "conf.d/10-defaults.conf",  # RabbitMQ's, inside the image (docker/local-images/rabbitmq)
}


@cache
def _tree() -> tuple[str, ...]:
    """Every file of the checkout, as a path from the root (the virtual environment left out)."""
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in {".git", ".venv", "__pycache__", "node_modules"}]
        files += [os.path.relpath(os.path.join(folder, name), ROOT) for name in names]
    return tuple(files)


def _exists(name: str, doc: Path) -> bool:
    """`name` is a path from a base the docs use, or the tail of one file's path (`put.lua`)."""
    bases = (ROOT, ROOT / "codebase", PACKAGE, ROOT / "codebase" / "tests", doc.parent)
    if any((base / name).exists() for base in bases):
        return True
    return any(path == name or path.endswith("/" + name) for path in _tree())


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_every_file_a_doc_names_exists(doc: Path) -> None:
    named = {match.group(1) for match in FILE.finditer(doc.read_text())} - NOT_IN_THE_TREE
    missing = sorted(name for name in named if not _exists(name, doc))
    assert not missing, f"{doc.relative_to(ROOT)} names files that are not in the tree: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(ROOT)))
def test_no_doc_points_at_a_line(doc: Path) -> None:
    found = LINE_REFERENCE.findall(doc.read_text())
    assert not found, f"{doc.relative_to(ROOT)} points at lines, which go stale: {found}"


def test_the_docs_are_found() -> None:
    assert len(DOCS) >= 10 and all(doc.is_file() for doc in DOCS)


def test_the_readme_is_for_users_short_with_exactly_two_commands_up_front() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["./run.sh", "./test.sh"]
    # Links stay inside the repository; machine timings and CPU models belong in docs/.
    assert not re.search(r"\]\((?:\.\./|/)", text)
    for machine_fact in ("Xeon", "EPYC", " minutes", "tests in "):
        assert machine_fact not in text, machine_fact
