"""Every make target is phony and named by `make help`."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_target_is_phony_and_named_by_make_help():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split())
    # each line of help starts "make TARGET" or "make TARGET / OTHER-TARGET"
    named = {name for names in re.findall(r'^\t@echo "make ([a-z0-9-]+(?: / [a-z0-9-]+)?)', makefile, re.MULTILINE)
             for name in names.split(" / ")}

    assert phony == targets
    assert named == targets - {"help"}
