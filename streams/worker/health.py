"""The worker's health, for Kubernetes probes and load balancers: `/health/live`
and `/health/ready` on its web server (200 when true, 503 when false, a JSON
body naming every check either way).

Ready: the worker can size a signal now. Its tables are recovered (faust's
recovery completed for the current assignment), it is not in a rebalance (from
the revocation until the recovery of the new assignment), the group's
assignment has been received (a spare worker with no partition is ready: it
serves standbys and takes partitions over), and the instruments view has
caught up with the instruments topic.

Live: processing is not stuck. A batch (or a commit, which takes the same
processing lock) that has not finished `stuck_after_s` after it began, because
a send, a commit or a lock never returns, makes the worker not live; so does an
event loop too busy to answer the probe at all. A worker with nothing to do is
live. Liveness does not look at the broker: a broker outage is not fixed by a
restart (the worker rides it out, docs: exactly-once, the faults tested).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


class Health:
    """Readiness and liveness of one worker, from what its app and view say.
    `clock` is injected (monotonic seconds) so a test can move time."""

    def __init__(self, app: Any, view: Any, stuck_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.view = view
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self._busy_since: float | None = None  # when the batch under way began
        self._busy = 0
        self.batches = 0  # batches finished since start

    @contextmanager
    def processing(self) -> Iterator[None]:
        """Around one batch, from before it waits for the processing lock to after
        it is done: the span that must not last forever."""
        if self._busy == 0:
            self._busy_since = self.clock()
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._busy_since = None
                self.batches += 1

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        app = self.app
        recovery = getattr(getattr(app, "tables", None), "recovery", None)
        recovered = recovery is not None and recovery.completed.is_set()
        checks = {
            "tables_recovered": recovered,
            "not_rebalancing": not app.rebalancing,
            "partitions_assigned": recovered and not app.rebalancing,
            "instruments_caught_up": self.view.caught_up.is_set(),
        }
        details = dict(checks)
        try:
            details["partitions"] = len(app.consumer.assignment()) if checks["partitions_assigned"] else 0
        except Exception:  # noqa: BLE001 - no consumer yet
            details["partitions"] = 0
        return all(checks.values()), details

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        since = self._busy_since
        busy_s = 0.0 if since is None else self.clock() - since
        live = busy_s <= self.stuck_after_s
        return live, {"processing_stuck": not live, "batch_running_s": round(busy_s, 3),
                      "stuck_after_s": self.stuck_after_s, "batches": self.batches}

    def install(self, app: Any) -> None:
        """Add the two pages to the app's web server."""
        health = self

        @app.page("/health/live")
        async def live(view: Any, request: Any) -> Any:
            ok, body = health.liveness()
            return view.json({"live": ok, **body}, status=200 if ok else 503)

        @app.page("/health/ready")
        async def ready(view: Any, request: Any) -> Any:
            ok, body = health.readiness()
            return view.json({"ready": ok, **body}, status=200 if ok else 503)
