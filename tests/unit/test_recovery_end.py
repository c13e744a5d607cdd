"""Active recovery ends once every active changelog partition has been read to its
read_committed end and applied, not after faust's two empty 5 s polls."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from faust.types import TP

from streams.faust_compat.recovery import RecoveryEnd

A, B = TP("app-exposure-changelog", 0), TP("app-exposure-changelog", 1)


class RecoveryStandIn:
    """faust's Recovery as RecoveryEnd reads it: the last record applied per partition
    (active_offsets) against its end less one (active_highwaters)."""

    def __init__(self) -> None:
        self.in_recovery = True
        self.active_tps = {A, B}
        # each changelog ends with a commit marker: end 11 (marker at 10, last record 9)
        self.active_offsets = Counter({A: 9, B: 4})
        self.active_highwaters = Counter({A: 10, B: 10})
        self.signal_recovery_end = asyncio.Event()
        self.flushed = 0

    def need_recovery(self) -> bool:
        return any(self.active_highwaters[tp] - self.active_offsets[tp] > 0 for tp in self.active_tps)

    def flush_buffers(self) -> None:
        self.flushed += 1

    def _set_recovery_ended(self) -> None:
        self.in_recovery = False


def test_recovery_ends_at_the_end_of_each_changelog_once_faust_applied_what_it_was_handed():
    async def scenario():
        recovery = RecoveryStandIn()
        queue: asyncio.Queue = asyncio.Queue()
        app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery, changelog_queue=queue))
        paused: set = set()
        end = RecoveryEnd(app, paused)
        positions = {A: 11, B: 5}

        async def read(tps):
            return {tp: positions[tp] for tp in tps}

        async def slurp_waiting():  # faust's recovery loop, idle on the queue
            return await queue.get()

        await end.after_fetch(read)  # B not read to its end: nothing ends
        assert not recovery.signal_recovery_end.is_set() and recovery.active_offsets[A] == 9

        positions[B] = 11
        await queue.put("a record faust has not applied yet")
        await end.after_fetch(read)  # read to the end, but not all applied
        assert not recovery.signal_recovery_end.is_set()

        queue.get_nowait()
        paused.add(B)  # a new rebalance paused it: its position is from before
        waiting = asyncio.create_task(slurp_waiting())
        await asyncio.sleep(0)
        await end.after_fetch(read)
        assert not recovery.signal_recovery_end.is_set()

        paused.clear()
        await end.after_fetch(read)
        assert recovery.signal_recovery_end.is_set() and not recovery.in_recovery
        assert (recovery.active_offsets[A], recovery.active_offsets[B], recovery.flushed) == (10, 10, 1)
        waiting.cancel()

    asyncio.run(scenario())


def test_the_table_manager_registers_the_changelogs_at_once_when_it_starts():
    """The consumer joins the group only once the tables are registered: faust's
    second of sleep before it was a second of every worker start."""
    from streams.faust_compat.recovery import SizerTableManager

    async def scenario() -> list:
        journal: list = []
        manager = object.__new__(SizerTableManager)  # what on_start touches, no more
        manager._stopped, manager._crashed = asyncio.Event(), asyncio.Event()

        async def sleep(seconds):
            journal.append(("sleep", seconds))

        async def update_channels():
            journal.append(("tables registered",))

        async def start():
            journal.append(("recovery started",))

        manager.sleep = sleep
        manager._update_channels = update_channels
        manager._recovery = SimpleNamespace(start=start)
        await manager.on_start()
        return journal

    assert asyncio.run(scenario()) == [("tables registered",), ("recovery started",)]
