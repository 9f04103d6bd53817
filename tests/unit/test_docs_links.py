"""The README is the front door: every docs/*.md page is one click from it, and no relative link is broken.

Links are read from README.md and docs/*.md outside code (fenced blocks and inline spans):
Markdown ``[text](target)`` and HTML ``src="target"``. A relative target must name an existing
file; a ``#fragment`` must name a heading of its page, with GitHub's anchor rules.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)|\bsrc=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def unfenced(text: str) -> str:
    """``text`` without its fenced code blocks (where ``# comment`` is no heading)."""
    return re.sub(r"(?ms)^```.*?^```[^\n]*$", "", text)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def links(page: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(prose(page.read_text()))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for ``page``'s headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated one suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"(?m)^#{1,6} +(.+?) *#*$", unfenced(page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def broken(page: Path, target: str) -> str | None:
    """Why ``target``, linked from ``page``, leads nowhere; None when it is fine (or not ours to check)."""
    if EXTERNAL.match(target):
        return None
    path, _, fragment = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.is_file():
        return f"{shown(page)}: {target}: no file {shown(file)}"
    if fragment and file.suffix == ".md" and fragment not in anchors(file):
        return f"{shown(page)}: {target}: no heading #{fragment} in {shown(file)}"
    return None


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    unlinked = [str(p.relative_to(REPO)) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md links none of {unlinked}"


def test_every_relative_link_reaches_a_file_and_heading():
    problems = [why for page in pages() for target in links(page) if (why := broken(page, target))]
    assert not problems, "\n".join(problems)


def test_the_checks_see_a_missing_file_and_an_unknown_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text("# A `code` title, here\n\n## Again\n## Again\n\n"
                    "[ok](#a-code-title-here) [two](#again-1) [there](other.md#other-page) [web](https://example.com)\n"
                    "[gone](missing.md) [bad](#nowhere) [bad there](other.md#again) <img src=\"missing.png\">\n"
                    "`[not a link](x.md)`\n```\n[nor this](y.md)\n```\n")
    assert anchors(page) == {"a-code-title-here", "again", "again-1"}
    found = links(page)
    assert found == ["#a-code-title-here", "#again-1", "other.md#other-page", "https://example.com",
                     "missing.md", "#nowhere", "other.md#again", "missing.png"]
    assert [t for t in found if broken(page, t)] == ["missing.md", "#nowhere", "other.md#again", "missing.png"]
