"""The faust worker process ends once its app has stopped, without mode's fixed waits.

A stopping worker (SIGTERM) stops every service first: under exactly-once the
last commit and the checkpoint of the local tables (`app.SizerApp.on_stop`), the
consumer, the producers, the tables' stores. mode-streaming 0.7.1 then ends the
process (`Worker._shutdown_loop`) by waiting for the tasks still on the loop in
0.1 s steps, up to a second (`_gather_all`), cancelling those left, and sleeping
a fixed second more (`_sentinel_task`) before it closes the loop. A restarting
worker's partitions wait for its process to end (the supervisor starts the next
one then; a static member's partitions are not moved meanwhile): up to two
seconds of every restart, spent after the last thing that mattered was done.

Here the tasks left get the same second at most, looked at every 10 ms, and
those cancelled are awaited (they end at their next step), so the loop closes
as soon as nothing runs on it.

A worker that must end at once (`stop_now`) writes its one line to the process's
stderr itself: mode's Worker redirects `sys.stderr` into logging, where a line
printed to it comes out as a WARNING of the logger `mode.redirect`."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import NoReturn

import faust

# how often, and for how long at most, the tasks left at the end are looked at
POLL_S = 0.01
WAIT_S = 1.0


def stop_now(line: str, code: int) -> NoReturn:
    """End the process now, exit `code`, `line` the last thing on its stderr: what
    was logged before is flushed first; nothing is committed, nothing is stopped."""
    logging.shutdown()
    os.write(2, f"{line}\n".encode())
    os._exit(code)


class PromptExitWorker(faust.Worker):
    """faust's Worker, whose process ends as soon as nothing runs on its loop."""

    def _gather_all(self) -> None:
        loop = self.loop
        for _ in range(int(WAIT_S / POLL_S)):
            if not _others(loop):
                break
            loop.run_until_complete(asyncio.sleep(POLL_S))
        left = _others(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=WAIT_S))

    async def _sentinel_task(self) -> None:
        # one pass of the loop: callbacks scheduled by what was cancelled run
        await asyncio.sleep(0)


def _others(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task]:
    """The tasks of `loop` not yet done (the caller runs none of them)."""
    return {task for task in asyncio.all_tasks(loop) if not task.done()}
