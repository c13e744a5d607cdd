"""A stopped worker's process ends as soon as nothing runs on its loop
(`streams.faust_compat.worker`): mode's fixed waits after the last commit were
seconds of every restart."""

from __future__ import annotations

import asyncio

import pytest

from streams.faust_compat.worker import POLL_S, PromptExitWorker


@pytest.fixture
def worker():
    worker = object.__new__(PromptExitWorker)  # only its loop is used at the end
    worker.loop = asyncio.new_event_loop()
    yield worker
    worker.loop.close()


def test_tasks_left_at_the_end_are_cancelled_and_ended_before_the_loop_closes(worker):
    loop = worker.loop
    ended = loop.create_task(asyncio.sleep(0.03))
    forever = loop.create_task(asyncio.Event().wait())
    worker._gather_all()
    assert ended.done() and not ended.cancelled()
    # mode cancels it and leaves it pending to a fixed second's sleep
    assert forever.done() and forever.cancelled()


def test_the_end_sleeps_no_fixed_second(worker, monkeypatch):
    asked: list[float] = []
    sleep = asyncio.sleep

    async def noted(seconds, *args, **kwargs):
        asked.append(seconds)
        return await sleep(0)

    monkeypatch.setattr(asyncio, "sleep", noted)
    worker.loop.create_task(sleep(0.02))
    worker._gather_all()
    worker.loop.run_until_complete(worker._sentinel_task())
    assert asked and max(asked) <= POLL_S  # mode-streaming 0.7.1: 0.1 s steps, then 1.0 s
