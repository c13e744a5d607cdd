from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from streams.wire import schemas
from tests.builders import journal_text

# every decision the acceptance journals produce is held to the checked-in decision
# schema, its `trace` included (closed objects: a key the engine writes undeclared fails)
_DECISION = jsonschema.Draft202012Validator(json.loads(schemas.path("decision").read_text()))


def _sizer() -> list[str]:
    script = Path(sys.executable).with_name("sizer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]


@pytest.fixture
def replay(tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """Write a journal, run the real `sizer replay` on it, return the decisions it printed."""

    def run(entries: list[dict[str, Any]], *options: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
        path = tmp_path / "journal.jsonl"
        path.write_text(journal_text(entries))
        done = subprocess.run(
            [*_sizer(), "replay", "--journal", str(path), *options],
            capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False,
        )
        assert done.returncode == 0, done.stderr
        decisions = [json.loads(line) for line in done.stdout.splitlines()]
        for decision in decisions:
            if isinstance(decision, dict) and "trace" in decision:
                _DECISION.validate(decision)
        return decisions

    return run
