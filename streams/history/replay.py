"""Offline replay: the engine over a journal, one decision per signal line, in order."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Iterable, TextIO

from streams.wire import journal
from streams.config import SizingConfig
from streams.engine import InputPosition
from streams.wire.models import Decision, Order, to_json
from streams.processor import MemoryStore, Processor
from streams.history.progress import Progress


@dataclass
class ReplayCounts:
    lines: int = 0
    signals: int = 0
    fills: int = 0
    instruments: int = 0
    controls: int = 0
    bad_lines: int = 0


def replay(
    lines: Iterable[str | bytes],
    config: SizingConfig,
    emit: Callable[[Decision, Order | None], None],
    report_bad_line: Callable[[int, str], None],
    processor: Processor | None = None,
) -> ReplayCounts:
    """Run `lines` through the engine. Offsets are per topic in file order, on
    partition 0, as if the journal had been produced to single-partition topics.

    No line stops the replay: a line that cannot be decoded or admitted is
    reported with its reason, and so is one the engine fails on
    (PROCESSING_ERROR, a bug, as the worker dead-letters it); the rest go on."""
    processor = processor or Processor(config, MemoryStore(config))
    counts = ReplayCounts()
    offsets = {"signals": 0, "fills": 0, "instruments": 0, "controls": 0}
    for entry in journal.read(lines, config.max_future_skew_ms):
        counts.lines = entry.line
        if entry.error is not None:
            counts.bad_lines += 1
            report_bad_line(entry.line, str(entry.error))
            continue
        offset = offsets[entry.topic]
        offsets[entry.topic] += 1
        try:
            if entry.topic == "signals":
                result = processor.on_signal(entry.message, InputPosition("signals", 0, offset))
                counts.signals += 1
                emit(result.decision, result.order)
            elif entry.topic == "fills":
                processor.on_fill(entry.message, offset)
                counts.fills += 1
            elif entry.topic == "controls":
                processor.on_control(entry.message, offset)
                counts.controls += 1
            else:
                processor.on_instrument(entry.message)
                counts.instruments += 1
        except Exception as exc:  # noqa: BLE001 - one bad input must not end the replay
            counts.bad_lines += 1
            report_bad_line(entry.line, f"PROCESSING_ERROR: {type(exc).__name__}: {exc}")
    return counts


def replay_file(path: str, config: SizingConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> ReplayCounts:
    """`sizer replay --journal`: decisions as JSON lines on `out`, bad lines and progress on `err`."""
    buffer: list[str] = []
    progress = Progress(err, unit="lines")

    def emit(decision: Decision, order: Order | None) -> None:
        buffer.append(to_json(decision))
        if len(buffer) >= 1024:
            out.write("\n".join(buffer) + "\n")
            buffer.clear()

    def bad_line(number: int, reason: str) -> None:
        err.write(f"{path}:{number}: {reason}\n")

    def counted(handle: Iterable[bytes]) -> Iterable[bytes]:
        for done, raw in enumerate(handle, start=1):
            progress.tick(done)
            yield raw

    with open(path, "rb") as handle:
        counts = replay(counted(handle), config, emit, bad_line)
    if buffer:
        out.write("\n".join(buffer) + "\n")
    out.flush()
    progress.close()
    return counts
