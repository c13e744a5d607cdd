"""The worker's start-up checks (`streams.worker.run.start_up`): every check still
runs and still stops start-up, on one admin client, the independent ones at once
(each client is a bootstrap, each check a round trip: seconds of every restart)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from streams.errors import TopicMismatch
from streams.worker import run


class Steps:
    """Fakes of every start-up step: what ran, with which admin client, and how many
    steps were under way together at most."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: dict[str, BaseException] | None = None,
                 together_needed: int = 1) -> None:
        self.ran: list[str] = []
        self.admins: dict[str, object] = {}
        self.clients = 0
        self.running = 0
        self.most = 0
        self.fail = fail or {}
        self.admin = object()
        # a step waits, up to a second, until this many steps are under way at once
        self.together_needed = together_needed
        steps = self

        @contextlib.asynccontextmanager
        async def admin_client(client, admin=None):
            steps.clients += 1
            yield steps.admin

        def step(name, answer=None):
            async def fake(*args, admin=None, **kwargs):
                steps.admins[name] = admin
                steps.running += 1
                steps.most = max(steps.most, steps.running)
                try:
                    for _ in range(100):
                        if steps.running >= steps.together_needed:
                            break
                        await asyncio.sleep(0.01)
                    steps.ran.append(name)
                    if name in steps.fail:
                        raise steps.fail[name]
                    return answer
                finally:
                    steps.running -= 1
            return fake

        monkeypatch.setattr(run, "admin_client", admin_client)
        monkeypatch.setattr(run, "apply", step("apply", []))
        monkeypatch.setattr(run, "unbounded_inputs", step("unbounded_inputs", ["sizer-signals: unbounded"]))
        monkeypatch.setattr(run, "internal_replication", step("internal_replication", {}))
        monkeypatch.setattr(run, "publish_config", step("publish_config"))
        monkeypatch.setattr(run, "declare_changelogs", step("declare_changelogs", []))
        monkeypatch.setattr(run, "prepare_local_state", step("prepare_local_state", "local tables kept"))


def _start_up(tmp_path: Path):
    kafka = SimpleNamespace(app_id="sizer", replication=SimpleNamespace(factor=1, min_insync=1), data_dir=tmp_path,
                            processing_guarantee="exactly_once")
    config = SimpleNamespace(max_future_skew_ms=5000)
    topics = SimpleNamespace(name=lambda role: f"sizer-{role}")
    app = SimpleNamespace(tables={"exposure": SimpleNamespace(changelog_topic_name="sizer-exposure-changelog",
                                                               partitions=6)},
                          conf=SimpleNamespace(tabledir=str(tmp_path / "tables")))
    return asyncio.run(run.start_up(object(), kafka, config, topics, app))


def test_start_up_runs_every_check_on_one_admin_client(monkeypatch, tmp_path):
    steps = Steps(monkeypatch)
    warnings, local_state = _start_up(tmp_path)
    assert sorted(steps.ran) == sorted(["apply", "unbounded_inputs", "internal_replication", "publish_config",
                                        "declare_changelogs", "prepare_local_state"])
    assert steps.clients == 1
    for name in ("apply", "unbounded_inputs", "internal_replication", "declare_changelogs"):
        assert steps.admins[name] is steps.admin, name
    assert local_state == "local tables kept"
    assert len(warnings) == 1 and "sizer-signals: unbounded" in warnings[0]


def test_the_read_only_checks_run_at_once(monkeypatch, tmp_path):
    # each of the three first checks waits until all three are under way: one after
    # another, each would wait its full second
    steps = Steps(monkeypatch, together_needed=3)
    _start_up(tmp_path)
    assert steps.most == 3
    assert sorted(steps.ran[:3]) == ["apply", "internal_replication", "unbounded_inputs"]


def test_a_topic_check_that_fails_stops_start_up_before_anything_is_published_or_the_checkpoint_read(
        monkeypatch, tmp_path):
    steps = Steps(monkeypatch, fail={"apply": TopicMismatch("missing topics: sizer-signals")})
    with pytest.raises(TopicMismatch, match="missing topics"):
        _start_up(tmp_path)
    assert "publish_config" not in steps.ran
    assert "declare_changelogs" not in steps.ran
    assert "prepare_local_state" not in steps.ran


def test_of_two_failed_checks_the_first_in_order_is_reported(monkeypatch, tmp_path):
    # the replication warning's check fails first in time; the topic check's error is
    # the one the user reads, as when the checks ran one after another
    steps = Steps(monkeypatch, fail={"apply": TopicMismatch("missing topics: sizer-signals"),
                                     "unbounded_inputs": RuntimeError("describe failed")})
    with pytest.raises(TopicMismatch):
        _start_up(tmp_path)
    assert "prepare_local_state" not in steps.ran


def test_a_failed_publish_leaves_the_checkpoint_for_the_next_start(monkeypatch, tmp_path):
    steps = Steps(monkeypatch, fail={"publish_config": RuntimeError("not authorized")})
    with pytest.raises(RuntimeError):
        _start_up(tmp_path)
    assert "prepare_local_state" not in steps.ran


# One data directory, one worker: its stores, their checkpoint and its transactional id
# are that worker's. A second worker on it stops before any broker, naming the setting.
HOLD = """
import sys, time
from pathlib import Path
from streams.worker.run import claim_data_dir
claim_data_dir(Path(sys.argv[1]), Path(sys.argv[1]).parent)
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_worker_on_a_data_directory_in_use_stops_in_one_line_before_any_broker(tmp_path):
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "KAFKA_"))}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SIZER_DATA_DIR": str(data_dir)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data_dir / "v1")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"sizer: SIZER_DATA_DIR: {data_dir} is in use by another worker (pid {holder.pid}): "
            "each worker needs its own data directory")
        assert "Traceback" not in done.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder gone, however it ended, the directory is free
    from streams.worker.run import claim_data_dir

    fd = claim_data_dir(data_dir / "v1", data_dir)
    os.close(fd)
