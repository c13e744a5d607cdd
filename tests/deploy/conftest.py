"""The deployment tests' tools (helm, promtool) and the chart rendered by helm."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm_tool import ensure_helm, ensure_kube_score
from tests.prometheus_tools import ensure_prometheus

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sizer"


def _built(ensure) -> str:
    path, reason = ensure()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _built(ensure_helm)


@pytest.fixture(scope="session")
def kube_score() -> str:
    return _built(ensure_kube_score)


@pytest.fixture(scope="session")
def promtool() -> str:
    reason = ensure_prometheus()
    if reason:
        pytest.skip(reason)
    return shutil.which("promtool")


def render(helm: str, *args: str) -> list[dict]:
    """The chart's resources as `helm template sizer deploy/helm/sizer ARGS` renders them."""
    done = subprocess.run([helm, "template", "sizer", str(CHART), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds
