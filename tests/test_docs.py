"""The README and docs/: short enough to read, every link and anchor resolves, and the generated pages (the
config reference, the commands) are current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO

PAGES = [REPO / "README.md", REPO / "README_cn.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, fence = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.+)", line)):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code are code
    text = re.sub(r"`[^`\n]*`", "", text)
    return [a or b for a, b in LINK.findall(text)]


def _name(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name


def broken(page: Path) -> list[str]:
    out = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{_name(page)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{_name(page)}: {target}: no such heading in {dest.name}")
    return out


def test_every_link_and_anchor_resolves():
    problems = [p for page in PAGES for p in broken(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_a_broken_link(tmp_path):
    """It would pass vacuously if it found no links: it must see these three problems."""
    (tmp_path / "there.md").write_text("# A heading, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-heading-with-code) [gone](nowhere.md) [bad](there.md#nope) "
                    "![pic](missing.png) `[code](not-a-link.md)` [self](#title)\n\n# Title\n")
    assert broken(page) == ["page.md: nowhere.md: no such file",
                            "page.md: there.md#nope: no such heading in there.md",
                            "page.md: missing.png: no such file"]


def test_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for page in (REPO / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"docs/{page.name}" in readme, f"the README does not link docs/{page.name}"


def test_generated_pages_are_current():
    """docs/config.md's reference and docs/commands.md are what scripts/update_docs.py makes now."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "update_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    for script in re.findall(r"bash (scripts/\S+\.sh)", readme):
        assert (REPO / script).is_file(), script
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in readme


def _commands(text: str) -> set[str]:
    """Every line of the page's code blocks, without its comment: the commands a reader copies."""
    blocks = text.split("```")[1::2]
    return {line.split("  #")[0].strip() for block in blocks for line in block.splitlines()[1:]
            if line.split("  #")[0].strip()}


def test_the_chinese_readme_has_every_command_of_the_english_one_and_each_links_the_other():
    english, chinese = (REPO / "README.md").read_text(), (REPO / "README_cn.md").read_text()
    missing = sorted(_commands(english) - _commands(chinese))
    assert not missing, f"README_cn.md lacks these commands of README.md: {missing}"
    assert "[简体中文](README_cn.md)" in english.splitlines()[2] and "[English](README.md)" in chinese.splitlines()[2]
    assert len(_commands(english)) >= 25
    # Chinese paragraphs are not broken across lines: Markdown would show a space between the characters
    prose = [line for block in chinese.split("```")[0::2] for line in block.splitlines()]
    broken = [a for a, b in zip(prose, prose[1:]) if a and b and not a.startswith(("#", "|", "-")) and
              not b.startswith(("#", "|", "-", "[", "`")) and ord(a[-1]) > 0x2e7f and ord(b[0]) > 0x2e7f]
    assert not broken, broken
