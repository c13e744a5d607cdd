"""Tools from Debian's packages for the tests (prometheus, promtool, docker-compose),
installed on first use where they are missing and the tests run as root with apt."""

from __future__ import annotations

import os
import shutil
import subprocess

_reasons: dict[str, str | None] = {}
_updated: list[bool] = []


def ensure_debian_package(package: str, *binaries: str) -> str | None:
    """None when every binary is on PATH (installing `package` if need be), else why not."""
    if package in _reasons:
        return _reasons[package]
    reason = None
    if not all(shutil.which(binary) for binary in binaries):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            reason = f"{package} is not installed and cannot be installed here (needs root and apt-get)"
        else:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            commands = [["apt-get", "install", "-y", "-qq", package]]
            if not _updated:
                commands.insert(0, ["apt-get", "update", "-qq"])
            for command in commands:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    reason = f"installing Debian's {package} failed: {' '.join(command)}: {done.stderr[-500:]}"
                    break
                if command[1] == "update":
                    _updated.append(True)
            if reason is None and not all(shutil.which(binary) for binary in binaries):
                reason = f"Debian's {package} package installed no {', '.join(binaries)}"
    _reasons[package] = reason
    return reason


def ensure_prometheus() -> str | None:
    return ensure_debian_package("prometheus", "prometheus", "promtool")
