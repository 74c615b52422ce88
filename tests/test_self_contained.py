"""The repository is all a user gets: no tracked file may lean on a folder beside the
clone, and every relative link in the README and in docs/ must land on a tracked file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

from tests.conftest import REPO

# Built from parts, so that this file does not name the outside folder itself.
_OUTSIDE = "sha" + "red"
OUTSIDE_PATTERNS = (
    "../" + _OUTSIDE,
    _OUTSIDE + "/keap",
    _OUTSIDE + "/customcrm",
    _OUTSIDE + "/MAPPINGS",
    "CRMSYNC_" + _OUTSIDE.upper() + "_DIR",
)

# [text](target) and ![alt](target), with an optional "title" after the target
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCED_CODE = re.compile(r"^```.*?^```", re.S | re.M)


def tracked_files() -> list[str]:
    """Every file git tracks in the repository, as paths relative to its root."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return [name for name in listed.split("\0") if name]


def outside_mentions(root: Path, files: list[str]) -> list[str]:
    """`file:line: text` of every line that names the outside folder."""
    hits = []
    for name in files:
        path = root / name
        if not path.is_file():  # tracked but deleted in the working tree
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if any(pattern in line for pattern in OUTSIDE_PATTERNS):
                hits.append(f"{name}:{number}: {line.strip()}")
    return hits


def relative_links(markdown: str) -> list[str]:
    """The targets of the markdown links that point into the repository (no scheme, not a
    bare #anchor), outside fenced code blocks, without their #fragment."""
    targets = []
    for target in MARKDOWN_LINK.findall(FENCED_CODE.sub("", markdown)):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def resolve(document: str, target: str) -> str | None:
    """The repository path a link of `document` points at, or None when it leaves the repo."""
    parts: list[str] = []
    for part in (PurePosixPath(document).parent / target).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def test_no_tracked_file_names_a_folder_outside_the_repository() -> None:
    files = tracked_files()
    assert "README.md" in files
    hits = outside_mentions(REPO, files)
    assert not hits, "files that name a folder outside the repository:\n" + "\n".join(hits)


def test_the_outside_patterns_are_found_when_present(tmp_path: Path) -> None:
    """The check itself: each pattern, written out, is reported with its file and line."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "clean line\n" + "\n".join(f"see {p}/x" for p in OUTSIDE_PATTERNS) + "\n"
    )
    (tmp_path / "b.py").write_text("nothing here\n")
    hits = outside_mentions(tmp_path, ["b.py", "docs/a.md"])
    assert [hit.split(": ", 1)[0] for hit in hits] == [
        f"docs/a.md:{n}" for n in range(2, 2 + len(OUTSIDE_PATTERNS))
    ]


def test_the_readme_links_the_specification() -> None:
    assert "docs/specification.md" in relative_links((REPO / "README.md").read_text())


def test_every_relative_link_in_the_readme_and_docs_lands_on_a_tracked_file() -> None:
    files = tracked_files()
    tracked = set(files)
    # folders that hold tracked files; the repository root is ""
    folders = {"" if p == PurePosixPath(".") else str(p) for f in files for p in PurePosixPath(f).parents}
    documents = ["README.md", *sorted(f for f in files if re.fullmatch(r"docs/[^/]+\.md", f))]
    assert "docs/specification.md" in documents
    broken, checked = [], 0
    for document in documents:
        for target in relative_links((REPO / document).read_text()):
            checked += 1
            path = resolve(document, target)
            if path is None or (path not in tracked and path not in folders):
                broken.append(f"{document}: ({target})")
    assert checked > 0
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)
