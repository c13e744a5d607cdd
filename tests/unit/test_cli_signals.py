"""`sizer tail --follow` stops on Ctrl-C and SIGTERM, even when started with
SIGINT ignored (as `cmd &` in a shell without job control starts it). No
broker: the tail itself is replaced by one that waits for ever."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# `sizer tail decisions --follow` with a tail that never ends by itself
FOLLOWER = """
import asyncio
import sys

import streams.ops.console as console


async def follow_for_ever(*args, **kwargs):
    print("following", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        print("closed", flush=True)

console.tail = follow_for_ever
from streams.cli import main

sys.exit(main(["tail", "decisions", "--follow"]))
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tail_follow_started_with_sigint_ignored_stops_on_signal_as_on_ctrl_c(stop):
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert follower.stdout.readline() == "following\n", follower.stderr.read()
        follower.send_signal(stop)
        code = follower.wait(timeout=30)
    finally:
        follower.kill()  # nothing once it has exited; never leaves a follower behind
        follower.wait()
    assert (code, follower.stdout.read(), follower.stderr.read()) == (0, "closed\n", "")
