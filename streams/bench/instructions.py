"""`make bench-instructions`: instructions per signal of the pure engine under
cachegrind, the figure the VM's speed cannot move.

One engine round (a fresh `Processor` over the decoded journal of `make
bench-core`: 100,000 signals with about 50,000 fills mixed in) is counted as
the instructions of a run with the round less those of a run without it, both
under `valgrind --tool=cachegrind --cache-sim=no`, divided by the signal count.
The two runs build and decode the same journal (hash seed fixed), so what is
left is the round. They run side by side, under `nice`.

    .venv/bin/python -m streams.bench.instructions [--signals N] [--preset P]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile

from streams.bench.core import decoded_journal, engine_round
from streams.config import load_config
from streams.wire import decimals


def _child(signals: int, preset: str, rounds: int) -> None:
    """The measured program: build and decode the journal, then `rounds` engine rounds."""
    decimals.use_engine_context()
    config = load_config(preset)
    entries, counted, _ = decoded_journal(signals, config)
    gc.collect()
    gc.freeze()
    for _ in range(rounds):
        engine_round(config, entries)
    print(f"{counted} signals")


_I_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _count(signals: int, preset: str, rounds: int, out: str) -> subprocess.Popen[str]:
    command = ["nice", "-n", "10", "valgrind", "--tool=cachegrind", "--cache-sim=no",
               f"--cachegrind-out-file={out}", sys.executable, "-m", "streams.bench.instructions",
               "--child", str(rounds), "--signals", str(signals), "--preset", preset]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _refs(run: subprocess.Popen[str]) -> tuple[int, int]:
    """(instructions, signals) of a finished child run."""
    stdout, stderr = run.communicate()
    found = _I_REFS.search(stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"cachegrind run failed (exit {run.returncode}): {stderr[-2000:]}")
    return int(found.group(1).replace(",", "")), int(stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--preset", default="conviction")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.signals, args.preset, args.child)
        return
    with tempfile.TemporaryDirectory(prefix="sizer-cachegrind-") as out:
        with_round = _count(args.signals, args.preset, 1, os.path.join(out, "round.out"))
        without = _count(args.signals, args.preset, 0, os.path.join(out, "base.out"))
        (total, signals), (base, _) = _refs(with_round), _refs(without)
    print(f"cachegrind: {total:,} instructions with one engine round, {base:,} without; {signals:,} signals")
    print(f"engine: {(total - base) / signals:,.0f} instructions per signal (target 100,000)")


if __name__ == "__main__":
    main()
