"""The documentation: the site builds strictly (no broken link or anchor), and the
layout page has one line per module of `streams/`, no more, no less."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "docs" / "pages" / "layout.md"


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                           str(ROOT / "docs" / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "layout" / "index.html").exists()


def listed_modules(text: str) -> list[str]:
    """The module of every row of the layout page's module table (its first cell's path)."""
    return re.findall(r"^\| `(streams/[^`]+\.py)` \|", text, flags=re.M)


def test_the_layout_page_has_one_line_per_module():
    listed = listed_modules(LAYOUT.read_text())
    modules = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "streams").rglob("*.py")
                     if path.name != "__init__.py")
    assert sorted(set(listed)) == sorted(listed), "a module listed twice"
    assert {"missing": sorted(set(modules) - set(listed)), "gone": sorted(set(listed) - set(modules))} == \
        {"missing": [], "gone": []}


def test_the_layout_page_heads_every_package():
    packages = sorted(f"{path.parent.relative_to(ROOT)}/" for path in (ROOT / "streams").rglob("__init__.py"))
    headed = re.findall(r"^\| \*\*`(streams/[^`]*)`", LAYOUT.read_text(), flags=re.M)
    assert sorted(set(packages) - set(headed)) == []


def test_the_readme_fits_under_300_lines_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets and [target for target in targets if not (ROOT / target).exists()] == []
