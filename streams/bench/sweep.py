"""`make bench-sweep`: `sizer sweep` over a generated 100,000-signal history
(the sweep demo's generator: every signal filled and closed, so 300,000 input
lines) under 12 configurations: the three policies, each at a 2 x 2 grid of
portfolio_cap and max_signal_age_s, settings every policy's run reads, so all 12
are run (none shares another's run, `sweep.same_run`). The figure is the sweep's
own last line: signals x configurations in seconds of wall time, history reading
included."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from streams import cli
from streams.sweep_demo import RECORDING_TOML, write_history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--portfolios", type=int, default=20)
    parser.add_argument("--workers", type=int, help="default: one per core")
    parser.add_argument("--set", action="append", dest="grid", metavar="NAME=V1,V2",
                        help="the grid instead of the default portfolio_cap=4000,5000 and max_signal_age_s=30,60; "
                             "e.g. --set drawdown_cut=0.25,0.5 --set loss_streak=2,3, which the static and conviction "
                             "policies never read: their configurations share runs, 6 runs in all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as directory:
        path, recorded = Path(directory) / "history.jsonl", Path(directory) / "recording.toml"
        recorded.write_text(RECORDING_TOML)
        started = time.perf_counter()
        lines = write_history(path, args.signals // args.portfolios, args.portfolios)
        print(f"history: {lines:,} lines generated in {time.perf_counter() - started:.1f} s "
              f"({os.cpu_count()} cores, pid {os.getpid()})", file=sys.stderr, flush=True)
        options = ["--workers", str(args.workers)] if args.workers else []
        grid = args.grid or ["portfolio_cap=4000,5000", "max_signal_age_s=30,60"]
        return cli.main(["sweep", "--journal", str(path), "--recorded", str(recorded), "--policy", "static",
                         "--policy", "conviction", "--policy", "graduated",
                         *(option for spec in grid for option in ("--set", spec)), *options])


if __name__ == "__main__":
    sys.exit(main())
