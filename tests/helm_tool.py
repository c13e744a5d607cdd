"""Go tools for the chart's tests (helm, kube-score), built from the Go module proxy at
pinned versions with the machine's Go toolchain (once: each binary is kept under
~/.cache/sizer-tools)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HELM_VERSION = "v3.19.0"
KUBE_SCORE_VERSION = "v1.20.0"
TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sizer-tools"


def ensure_go_tool(name: str, package: str, version: str) -> tuple[str | None, str | None]:
    """(path to the binary `name` of `package@version`, None), or (None, why it cannot be had here)."""
    target = TOOLS / f"{name}-{version}"
    binary = target / name
    if binary.exists():
        return str(binary), None
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None, f"no Go toolchain to build {name} with"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([go, "install", f"{package}@{version}"],
                          env={**os.environ, "GOBIN": str(target), "GOFLAGS": "-mod=mod"},
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not binary.exists():
        return None, f"building {name} {version} failed: {done.stderr[-1000:]}"
    return str(binary), None


def ensure_helm() -> tuple[str | None, str | None]:
    """(path to helm, None), or (None, why it cannot be had here)."""
    return ensure_go_tool("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION)


def ensure_kube_score() -> tuple[str | None, str | None]:
    """(path to kube-score, None), or (None, why it cannot be had here)."""
    return ensure_go_tool("kube-score", "github.com/zegl/kube-score/cmd/kube-score", KUBE_SCORE_VERSION)
