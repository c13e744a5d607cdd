"""Helm for the tests, built from the Go module proxy at a pinned version with the
machine's Go toolchain (once: the binary is kept under ~/.cache/sizer-tools)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HELM_VERSION = "v3.19.0"
TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sizer-tools"


def ensure_helm() -> tuple[str | None, str | None]:
    """(path to helm, None), or (None, why it cannot be had here)."""
    target = TOOLS / f"helm-{HELM_VERSION}"
    helm = target / "helm"
    if helm.exists():
        return str(helm), None
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None, "no Go toolchain to build helm with"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([go, "install", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
                          env={**os.environ, "GOBIN": str(target), "GOFLAGS": "-mod=mod"},
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not helm.exists():
        return None, f"building helm {HELM_VERSION} failed: {done.stderr[-1000:]}"
    return str(helm), None
