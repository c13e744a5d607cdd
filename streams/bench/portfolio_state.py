"""What one portfolio costs a worker: `python -m streams.bench.portfolio_state`.

Sizes one accepted signal for each of `--portfolios` new portfolio ids through the
worker's own state code (`Processor` over `worker.tables.TableStore`, its tables
held in memory as faust's memory store holds them) and prints, per portfolio:
the bytes written to the tables (what each changelog holds per portfolio once
compacted) and the growth of the process's resident memory (the tables' values
plus the decoded state the worker keeps for every portfolio it has seen). A
worker on RocksDB keeps the table values on disk instead, and only the decoded
state in memory. These are the figures behind registration
(`SIZER_REQUIRE_REGISTRATION`): without it, each new id a producer invents
costs this much, never released.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from typing import Any

from streams.config import load_config
from streams.processor import Processor
from streams.wire.models import Instrument, Signal
from streams.worker.tables import TableStore

SYMBOL = {"symbol": "X", "legs": [{"venue_symbol": "XUSDT", "side": "buy", "qty_step": "0.01", "min_qty": "0",
                                   "max_qty": None, "min_notional": "0"}]}


class _Table(dict):  # type: ignore[type-arg]
    """A table as `TableStore` reads it (`.data` is the local store)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.data = self
        self.changelog_topic_name = f"{name}-changelog"


class _Tables:
    """Writes table entries in place, as the worker's `Outputs.put` does locally."""

    async def put(self, table: _Table, key: bytes, value: bytes | None) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(portfolios: int, preset: str) -> dict[str, Any]:
    config = load_config(preset)
    tables = {name: _Table(name) for name in ("exposure", "streak", "controls", "windows")}
    store = TableStore(tables["exposure"], tables["streak"], tables["controls"], tables["windows"], config,
                       _Tables(), lambda: "event")
    processor = Processor(config, store, {"X": Instrument.model_validate(SYMBOL)})
    gc.collect()
    before = rss_bytes()
    for n in range(portfolios):
        portfolio_id = f"invented-{n:08d}"
        processor.on_signal(Signal.model_validate({
            "signal_id": f"s-{n}", "portfolio_id": portfolio_id, "symbol": "X", "side": "buy", "score": "0.9",
            "price": "10", "ts": 1_767_225_600_000 + n}))
        for changed, _ in store.changed():
            await store.write(changed)
        store.end_batch()
    gc.collect()
    grown = rss_bytes() - before
    table_bytes = {name: sum(len(key) + len(value) for key, value in table.items()) for name, table in tables.items()}
    return {"portfolios": portfolios, "rss_bytes_per_portfolio": grown / portfolios,
            "table_bytes_per_portfolio": {name: size / portfolios for name, size in table_bytes.items()},
            "table_bytes_per_portfolio_total": sum(table_bytes.values()) / portfolios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--portfolios", type=int, default=20_000)
    parser.add_argument("--preset", default="conviction")
    args = parser.parse_args()
    result = asyncio.run(measure(args.portfolios, args.preset))
    per_table = ", ".join(f"{name} {size:.0f}" for name, size in result["table_bytes_per_portfolio"].items())
    print(f"{result['portfolios']} new portfolios, one accepted signal each ({args.preset}):")
    print(f"  table bytes per portfolio: {result['table_bytes_per_portfolio_total']:.0f} ({per_table})")
    print(f"  resident memory per portfolio: {result['rss_bytes_per_portfolio'] / 1024:.2f} KiB "
          f"(table values in memory, as faust's memory store, plus the decoded state)")


if __name__ == "__main__":
    main()
