"""Every relative link in README.md, docs/*.md and bench/results/*.md points to a file that
exists, and an anchor in it (`#section`, `ledger.md#lifecycle`) to a heading of that page.

A link is Markdown's `[text](target)`.  Links to web pages (`http://`, `https://`, `mailto:`)
are not checked.  Targets are relative to the folder of the file that holds the link.  A
heading's anchor is GitHub's: lower case, punctuation other than `-` and `_` dropped, each space
a `-`, and `-1`, `-2`... after a repeated one.  Links inside code blocks and inline code are not
links and are ignored."""

from __future__ import annotations

import re
from functools import cache
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


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        heading = _HEADING.match(line)
        if in_fence or heading is None:
            continue
        slug = _NOT_SLUG.sub("", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(f"{slug}-{count}" if count else slug)
    return out


@cache
def _page_anchors(page: Path) -> set[str]:
    """`anchors` of a page, read once however many links name it."""
    return anchors(page.read_text(encoding="utf-8"))


_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_NOT_SLUG = re.compile(r"[^\w\- ]")


def broken_links(doc: Path) -> list[str]:
    """The relative link targets in `doc` whose file does not exist, or whose anchor names no
    heading of its page."""
    broken = []
    for target in link_targets(doc.read_text(encoding="utf-8")):
        if target.startswith(_EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        page = doc.parent / path if path else doc
        if not page.exists() or (anchor and page.suffix == ".md"
                                 and anchor not in _page_anchors(page.resolve())):
            broken.append(target)
    return broken


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "bench" / "results").glob("*.md"))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file(doc: Path) -> None:
    """Each relative link of the README and of every docs page names an existing file."""
    assert broken_links(doc) == []


def test_a_missing_target_is_reported(tmp_path: Path) -> None:
    """The check can fail: a link to a file that is not there, or to a heading its page does
    not have, is reported; existing files and headings, web links and code are not."""
    (tmp_path / "there.md").write_text("# There\n\n## `workers: 1` or 2?\n\n## There\n")
    doc = tmp_path / "page.md"
    doc.write_text(
        "# Top\n\nSee [there](there.md), [a section](there.md#there), [here](#top),\n"
        "[code](there.md#workers-1-or-2), [again](there.md#there-1), [not](#bottom),\n"
        "[the web](https://example.org/missing.md) and [gone](missing.md#part),"
        " [no such](there.md#here).\n"
        "`[not a link](inline.md)`\n"
        "```\n[not a link either](fenced.md)\n```\n",
        encoding="utf-8")
    assert broken_links(doc) == ["#bottom", "missing.md#part", "there.md#here"]


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
