"""faust's table recovery: it ends when the consumer has read to each changelog's
committed end, not after two empty five-second polls; and it never seeks a
changelog partition to an offset it does not have.

faust-streaming 0.15.3 (`Recovery._slurp_changelogs`) takes an active changelog
partition as recovered once the offset of the last record it applied reaches the
partition's end less one. Under exactly-once the last offset of a changelog is a
transaction marker, which is never delivered: the last record's offset stays
below, and recovery ends only in the loop's timeout branch, after two
consecutive 5 s waits with nothing to apply (`detect_aborted_tx`, faust's answer
to faust-streaming issue #47). Every start and every rebalance that moved a
partition cost at least 10 s, however small the changelog, and a worker whose
local state was already complete went into that wait all the same.

Here the worker's fetch loop (`transport.DirectInputConsumer`) calls
`RecoveryEnd.after_fetch` after each fetched batch has been handed over: when
the consumer's position in an active changelog partition has reached the
read_committed end faust read (`WholeBatchConsumer.highwaters`), everything
below it was delivered, the rest being markers and aborted records, so the
partition is recovered once faust has applied what it was handed; recovery ends
as faust's own timeout branch ends it, without the wait. The position is the one
aiokafka gives the application: it moves only when getmany returns, and only the
fetch loop calls getmany, so what it covers was handed over already.
"""

from __future__ import annotations

from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import RebalanceAgain, Recovery


class SafeSeekRecovery(Recovery):
    """faust-streaming 0.15.3's Recovery, whose seek of the changelog partitions never
    passes aiokafka an offset that is not one.

    `_seek_offsets` seeks each partition to the offset faust noted for it, mapping
    only -1 to 0. A partition added by a rebalance that began while this round of
    recovery was under way is noted with None until the next round builds its
    offset, and a partition whose earliest offset could not be read (its leader
    lost) with -2; aiokafka refuses both with `ValueError('Offset must be a
    positive integer')`, which is not one of the errors the recovery loop retries
    on: the Recovery service crashed and took the worker down (exit 1), seen when a
    worker rejoined while the survivor was taking its partitions over. faust's own
    guard against that round (`if self.signal_recovery_start.is_set()`) comes only
    after the seek of the active partitions, and there is none before the standbys'
    (no faust-streaming issue names this error; #54 is the same race with a
    revoked partition).
    Here a round that a newer rebalance has overtaken stops before seeking (the
    next round starts at once, as faust's own guards do), and an offset that is
    not one is read from the start of the changelog (-1, as faust does when it
    knows nothing): more to read, never less."""

    async def _build_highwaters(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        """The active changelogs' ends once the previous owners' transactions on them
        have ended, under `SIZER_TRANSACTIONS=per_worker`
        (`worker_transactions.WorkerTransactionManager.wait_settled`); a newer
        rebalance interrupts the wait as it interrupts every step here."""
        wait_settled = getattr(self.app.consumer.transactions, "wait_settled", None)
        if title == "active" and wait_settled is not None:
            await wait_settled()
        await super()._build_highwaters(consumer, tps, destination, title)

    async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        if self.signal_recovery_start.is_set():
            raise RebalanceAgain()
        for tp in tps:
            offset = offsets.get(tp)
            if not isinstance(offset, int) or offset < -1:
                offsets[tp] = -1
        await super()._seek_offsets(consumer, tps, offsets, title)


class SizerTableManager(TableManager):
    """faust's TableManager with `SafeSeekRecovery` (the app's `TableManager` setting),
    which registers the tables' changelogs as soon as it starts.

    faust-streaming 0.15.3's `TableManager.on_start` sleeps a second first, for
    tables declared late; and the consumer subscribes, so joins the group, only
    once the tables are registered (`Conductor._subscriber`): every start of a
    worker waited that second before its join. The worker declares every table
    before faust starts (`worker.app.declare_tables`), and faust refuses one added
    after recovery began anyway."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SafeSeekRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class RecoveryEnd:
    """Ends faust's active recovery once every active changelog partition has been
    read to its end (see the module)."""

    def __init__(self, app: Any, paused: Any) -> None:
        self.app = app
        # the changelog partitions paused in the consumer: faust pauses every partition
        # when a rebalance begins and resumes the active ones once it has sought them
        # to where recovery starts; until then their positions belong to the past
        self.paused = paused

    def _waiting(self) -> list[Any]:
        """The active changelog partitions whose applied offset is short of faust's
        target (end - 1); none when no recovery is under way."""
        tables = self.app.tables
        recovery = tables.recovery
        if not recovery.in_recovery or not recovery.active_tps:
            return []
        offsets, highwaters = recovery.active_offsets, recovery.active_highwaters
        return sorted(tp for tp in recovery.active_tps
                      if tp not in self.paused and highwaters.get(tp) is not None
                      and (offsets.get(tp) is None or offsets[tp] < highwaters[tp]))

    def _applied_all(self) -> bool:
        """faust's recovery loop has applied every changelog record handed to it: its
        queue is empty and it is waiting on it (not holding a record it took)."""
        queue = self.app.tables.changelog_queue
        return queue.empty() and any(not getter.done() for getter in queue._getters)

    async def after_fetch(self, positions: Any) -> None:
        """`positions(tps)` -> {tp: the consumer's position}, read after a fetched batch
        was handed over whole."""
        waiting = self._waiting()
        if not waiting:
            return
        reached = await positions(waiting)
        recovery = self.app.tables.recovery
        done = [tp for tp in waiting
                if reached.get(tp) is not None and reached[tp] > recovery.active_highwaters[tp]]
        if not done or not self._applied_all() or self._waiting() != waiting:
            return  # not there yet, or faust still applying: at the next fetch
        for tp in done:
            recovery.active_offsets[tp] = recovery.active_highwaters[tp]
        if not recovery.need_recovery():
            # as faust's `_maybe_signal_recovery_end` does
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
