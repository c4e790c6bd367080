"""Every relative link in README.md and docs/*.md points to a file that exists.

A link is Markdown's `[text](target)`.  Links to web pages (`http://`, `https://`, `mailto:`)
and links to an anchor of the same page (`#section`) are not files and are not checked; an
anchor after a file (`ledger.md#lifecycle`) is dropped and the file is checked.  Targets are
relative to the folder of the file that holds the link.  Links inside code blocks and inline
code are not links and are ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_EXTERNAL = ("http://", "https://", "mailto:")


def link_targets(text: str) -> list[str]:
    """The targets of the Markdown links in `text`, outside code blocks and inline code."""
    targets: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            targets.extend(_LINK.findall(_INLINE_CODE.sub("", line)))
    return targets


def broken_links(doc: Path) -> list[str]:
    """The relative link targets in `doc` whose file does not exist."""
    broken = []
    for target in link_targets(doc.read_text(encoding="utf-8")):
        if target.startswith(_EXTERNAL) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    return broken


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file(doc: Path) -> None:
    """Each relative link of the README and of every docs page names an existing file."""
    assert broken_links(doc) == []


def test_a_missing_target_is_reported(tmp_path: Path) -> None:
    """The check can fail: a link to a file that is not there is reported, with its anchor;
    existing files, anchors of the same page, web links and code are not."""
    (tmp_path / "there.md").write_text("# There\n")
    doc = tmp_path / "page.md"
    doc.write_text(
        "See [there](there.md), [a section](there.md#there), [here](#top),\n"
        "[the web](https://example.org/missing.md) and [gone](missing.md#part).\n"
        "`[not a link](inline.md)`\n"
        "```\n[not a link either](fenced.md)\n```\n",
        encoding="utf-8")
    assert broken_links(doc) == ["missing.md#part"]


def test_links_are_read_from_markdown() -> None:
    """Targets come from `[text](target)`, with an optional title, and nothing else."""
    text = 'A [one](a.md) and [two](b/c.md "title"), (not) [a link] (d.md).'
    assert link_targets(text) == ["a.md", "b/c.md"]


def test_the_module_map_matches_the_tree() -> None:
    """docs/architecture.md lists every module under engine/ (migrations' versions aside), and
    names none that does not exist: a newcomer's map stays true."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "architecture.md").read_text()
    mapped = set(re.findall(r"^\| `(engine/[^`]+\.py)` \|", doc, re.M))
    tree = {str(p.relative_to(root)) for p in (root / "engine").rglob("*.py")
            if "migrations/versions" not in str(p)}
    assert sorted(tree - mapped) == [] and sorted(mapped - tree) == []
