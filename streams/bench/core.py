"""`make bench-core`: decisions per second of the pure engine on one core, over a
generated 100,000-signal journal with fills mixed in.

Prints two figures: the engine alone (messages decoded beforehand: gate, sizing,
caps, exchange rounding, state transitions, decision and order built), and the
whole `sizer replay` path (JSON decode, validation, engine, JSON encode).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import time

from streams.wire import decimals

from streams.wire import journal
from streams.config import SizingConfig, load_config
from streams.engine import InputPosition
from streams.wire.models import to_json
from streams.processor import MemoryStore, Processor
from streams.history.replay import replay
from streams.bench.generate import session


def decoded_journal(signals: int, config: SizingConfig) -> tuple[list[journal.Entry], int, list[str]]:
    """The generated journal of `signals` signals decoded: (its entries, the signal
    count, its lines)."""
    lines = [decimals.dumps({"topic": topic, "value": value}) for topic, value in session(signals)]
    entries = list(journal.read(lines, config.max_future_skew_ms))
    return entries, sum(1 for e in entries if e.topic == "signals"), lines


def engine_round(config: SizingConfig, entries: list[journal.Entry]) -> int:
    """One engine round: a fresh processor over the decoded entries; the signals accepted."""
    proc = Processor(config, MemoryStore(config))
    accepted = 0
    offset = 0
    for entry in entries:
        if entry.topic == "signals":
            accepted += proc.on_signal(entry.message, InputPosition("signals", 0, offset)).order is not None
            offset += 1
        elif entry.topic == "fills":
            proc.on_fill(entry.message, offset)
        else:
            proc.on_instrument(entry.message)
    return accepted


def main() -> None:
    decimals.use_engine_context()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--preset", default="conviction")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.preset)

    entries, signals, lines = decoded_journal(args.signals, config)
    fills = sum(1 for e in entries if e.topic == "fills")
    # The pre-decoded journal is held in memory only because this is a benchmark; keep
    # the cyclic GC from re-walking it on every gen-2 pass, as a worker would after start-up.
    gc.collect()
    gc.freeze()
    print(f"journal: {signals:,} signals, {fills:,} fills, {len(entries) - signals - fills} instruments; "
          f"preset {args.preset}; pid {os.getpid()}")

    best_engine = best_replay = 0.0
    for _ in range(args.rounds):
        started = time.perf_counter()
        accepted = engine_round(config, entries)
        engine_seconds = time.perf_counter() - started
        best_engine = max(best_engine, signals / engine_seconds)

        out = io.StringIO()
        started = time.perf_counter()
        replay(lines, config, lambda d, o: out.write(to_json(d) + "\n"), lambda n, r: None)
        replay_seconds = time.perf_counter() - started
        best_replay = max(best_replay, signals / replay_seconds)
        print(f"  round: engine {signals / engine_seconds:,.0f} decisions/s ({accepted:,} accepted), "
              f"replay {signals / replay_seconds:,.0f} decisions/s")

    print(f"engine only (decoded input):      {best_engine:,.0f} decisions/s  (target about 100,000 on an idle machine)")
    print(f"replay (decode + engine + encode): {best_replay:,.0f} decisions/s  (target about 30,000)")


if __name__ == "__main__":
    main()
