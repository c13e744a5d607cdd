"""Suite-wide hooks. When TEST_BROKER_REPORT names a file, the outcome of every
test marked `broker` is written there, so CI can fail a run whose broker tests
were skipped or deselected instead of run."""

from __future__ import annotations

import json
import os

import pytest

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "broker" not in report.keywords:
        return
    if report.when == "call":
        _outcomes[report.nodeid] = report.outcome
    elif report.outcome != "passed":  # skipped or failed in setup or teardown
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("TEST_BROKER_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump(_outcomes, handle, indent=1, sort_keys=True)
