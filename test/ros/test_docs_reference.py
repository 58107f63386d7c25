"""docs/parameters.md is generated from the parameter table and the launch arguments, and every
relative link in README.md and docs/*.md points at a file of the repository. Pure and fast: no ROS,
no torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from lightwam_ros import config
from lightwam_ros.ros.docs_reference import REGENERATE, render_parameters_md
from lightwam_ros.ros.launch_config import LAUNCH_ARGUMENTS

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMETERS_MD = REPO_ROOT / "docs" / "parameters.md"

# [text](target) and [text](target "title"); images too. Only the target is captured.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def _links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside fenced code blocks and inline code."""
    out = []
    fenced = False
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for m in _LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            out.append((lineno, m.group(1)))
    return out


def test_parameters_md_is_generated_from_the_tables() -> None:
    assert PARAMETERS_MD.is_file(), f"docs/parameters.md is missing; generate it with: {REGENERATE}"
    committed = PARAMETERS_MD.read_text(encoding="utf-8")
    assert committed == render_parameters_md(), (
        "docs/parameters.md differs from the parameter table / launch arguments; regenerate it with: "
        f"{REGENERATE}")


def test_parameters_md_has_a_row_per_parameter_and_launch_argument() -> None:
    text = render_parameters_md()
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    assert not [s.name for s in config.PARAMETERS if s.name not in rows]
    assert not [a.name for a in LAUNCH_ARGUMENTS if a.name not in rows]
    for spec in config.PARAMETERS:
        assert spec.description.replace("<", "&lt;").replace("|", "\\|") in text, spec.name


def test_link_pattern() -> None:
    found = [t for _, t in _links_of_text("see [a](docs/x.md) and [b](../README.md#top), ![i](p.png), "
                                          "[web](https://example.org) `[not](code.md)`")]
    assert found == ["docs/x.md", "../README.md#top", "p.png", "https://example.org"]


def _links_of_text(text: str) -> list[tuple[int, str]]:
    return [(1, m.group(1)) for m in _LINK.finditer(re.sub(r"`[^`]*`", "", text))]


def test_relative_markdown_links_resolve() -> None:
    broken = []
    for path in _markdown_files():
        for lineno, target in _links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
                continue
            file_part = target.split("#", 1)[0]
            if not file_part:  # an anchor in the same file
                continue
            if not (path.parent / file_part).exists():
                broken.append(f"{path.relative_to(REPO_ROOT)}:{lineno}: {target}")
    assert not broken, "relative links to files that do not exist:\n" + "\n".join(broken)
