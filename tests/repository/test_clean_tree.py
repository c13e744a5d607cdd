"""The repository tracks nothing generated or local."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_tracked_file_matches_gitignore():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=ROOT, input=tracked,
                             capture_output=True).stdout.split(b"\0")
    assert [path.decode() for path in ignored if path] == []
