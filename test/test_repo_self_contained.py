"""The repository explains itself: no tracked text file points at notes, specs or briefs kept elsewhere.

Code comments, docstrings and docs cite docs/model.md, docs/design.md, docs/safety.md or the README,
never background documents that live outside the repository (a reader of the repository cannot open
them). This test scans every tracked text file (`git ls-files`) for the names of such documents and
for section marks that cite them. Pure and fast: no ROS, no torch.

The patterns are assembled from pieces so that this file does not match itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".xml", ".cfg", ".toml", ".sh", ".txt"}
NAMES = {"Makefile"}

_S = "\N{SECTION SIGN}"
OUTSIDE = re.compile(
    "|".join([
        r"ros2" + r"-notes",  # ROS 2 notes
        r"DESIGN" + r"\.md",  # the original design page (docs/design.md is in-repo, lower case)
        r"STYLE" + r"\.md",
        r"inference" + r"-spec",  # lightwam inference spec
        r"vae-t5" + r"-spec",  # VAE / umT5 spec
        r"\bspec " + _S,  # "spec", a section sign, a number
        r"\bspec [A-C]\.\d",  # "spec", an appendix letter, a dot, a number
        r"\bBRI" + r"EF\b",  # the task brief (upper case: the English word "brief" is fine)
        r"(?<![\w.-])(?:\.\./|/work/)?shar" + r"ed/",  # the folder those documents sit in
        r"launch" + r"-standins",
        r"L1zi" + r"ang",  # the upstream repository: the docs describe the model in their own words
        r"github" + r"\.com",
        _S,  # no section citations at all: in-repo docs are cited by file and heading
    ])
)


def _tracked_text_files() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    out = subprocess.run([git, "-C", str(REPO_ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    files = []
    for name in out.decode("utf-8").split("\0"):
        if not name:
            continue
        path = REPO_ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        if path.suffix in SUFFIXES or path.name in NAMES or path.read_bytes()[:2] == b"#!":
            files.append(path)
    return files


def test_pattern_catches_the_outside_names() -> None:
    for text in ["see " + "ros2" + "-notes.md " + _S + "6", "(spec " + _S + "2.12)", "spec " + "B.4",
                 "DESIGN" + ".md", "lightwam-inference" + "-spec.md", "lightwam-vae-t5" + "-spec.md",
                 "the " + "BRI" + "EF's table", "../" + "shar" + "ed/ros2", "/work/" + "shar" + "ed/x.md"]:
        assert OUTSIDE.search(text), text
    for text in ["docs/design.md, \"Camera synchronization\"", "a brief hold", "shared-memory segment",
                 "2 shared cores", "SyntheticBagSpec", "spec = build_spec(args)", "docs/model.md"]:
        assert not OUTSIDE.search(text), text


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            m = OUTSIDE.search(line)
            if m:
                hits.append(f"{path.relative_to(REPO_ROOT)}:{lineno}: {m.group(0)!r}: {line.strip()[:100]}")
    assert not hits, (
        "cite docs/model.md, docs/design.md, docs/safety.md or README.md (file and heading) instead of "
        "documents outside the repository:\n" + "\n".join(hits)
    )
