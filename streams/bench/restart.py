"""A worker's restart, phase by phase: how long its stop (SIGTERM to exit) and its
start (exec to the first decision) spend in each step, on one exactly-once worker.

The worker is started in this module's `--worker` mode: `sizer worker` itself,
with each start-up step of `streams.worker.run` timed (a `PHASE name start end`
line each, wall-clock seconds); faust's own log lines give the rest. The worker
decides one signal per portfolio, then is restarted `--rounds` times (SIGTERM,
then a new process) while probe signals, one per input partition, wait for it;
each round prints every line of the stop and the start against the SIGTERM, and
the summary: the stop, the start to the first decision, and their sum (how long
a restarted worker's partitions wait).

    python -m streams.bench.restart [--rounds 3] [--portfolios 1000] [--logs DIR] [--code DIR]

Uses KAFKA_BOOTSTRAP_SERVERS (e.g. `make broker`). `--code DIR` runs the worker
from another checkout of the product (PYTHONPATH), to compare two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

STEPS = ("apply", "unbounded_inputs", "publish_config", "build_app", "declare_changelogs", "internal_replication",
         "prepare_local_state", "private_state", "start_up")


def _note(name: str, start: float, end: float) -> None:
    sys.stderr.write(f"PHASE {name} {start:.3f} {end:.3f}\n")
    sys.stderr.flush()


def _timed(module: object, name: str) -> None:
    step = getattr(module, name, None)
    if step is None:
        return
    if inspect.iscoroutinefunction(step):
        @functools.wraps(step)
        async def timed(*args, **kwargs):
            began = time.time()
            try:
                return await step(*args, **kwargs)
            finally:
                _note(name, began, time.time())
    else:
        @functools.wraps(step)
        def timed(*args, **kwargs):
            began = time.time()
            try:
                return step(*args, **kwargs)
            finally:
                _note(name, began, time.time())
    setattr(module, name, timed)


def worker_mode(began: float) -> int:
    """`sizer worker --preset conviction`, its start-up steps timed."""
    import streams.cli
    import streams.worker.run as run
    import streams.worker.app  # noqa: F401 - imported before the clock of the steps starts

    _note("imports", began, time.time())
    for name in STEPS:
        _timed(run, name)
    try:
        return streams.cli.main(["worker", "--preset", "conviction"])
    finally:
        _note("exit", time.time(), time.time())


STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] ([^:]+): (.*)$")


def events(text: str) -> list[tuple[float, str]]:
    """(wall time, what) of every timed step, harness mark and log line of `text`."""
    found = []
    for line in text.splitlines():
        if line.startswith("PHASE "):
            _, *name, start, end = line.split(" ")
            found += [(float(start), "start " + " ".join(name)), (float(end), "end   " + " ".join(name))]
        elif line.startswith("HARNESS "):
            _, name, at = line.split(" ")[:3]
            found.append((float(at), "harness " + name))
        elif (match := STAMP.match(line)):
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((at, f"{match.group(2)}: {match.group(3)[:150]}"))
    return sorted(found, key=lambda event: event[0])


def main(argv: list[str] | None = None) -> int:
    began = time.time()
    parser = argparse.ArgumentParser(prog="python -m streams.bench.restart", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--portfolios", type=int, default=1000)
    parser.add_argument("--logs", type=Path, default=None, help="keep the worker's log here (default: a temporary "
                                                                 "directory, removed)")
    parser.add_argument("--standby", type=int, default=0)
    parser.add_argument("--code", default=None, help="run the worker from this checkout (PYTHONPATH)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_mode(began)
    import tempfile

    from streams.bench import run_bench

    def run() -> int:
        with tempfile.TemporaryDirectory(prefix="sizer-restart-") as workdir:
            return measure(args, args.logs or Path(workdir))

    return run_bench(run)


def measure(args: argparse.Namespace, logs: Path) -> int:
    from streams.bench.chaos import Worker
    from streams.bench.generate import spread_signals
    from streams.bench.recovery import decided, fresh_deployment, probes
    from streams.kafka.io import publish

    class Timed(Worker):
        """The worker process of `chaos.Worker`, in this module's `--worker` mode (run
        from this file, whatever `--code` the product comes from)."""

        def start(self) -> None:
            self.expected_exit = False
            log = open(self.workdir / "worker.log", "ab")
            log.write(f"HARNESS exec {time.time():.3f}\n".encode())
            log.flush()
            run = (f"import runpy, sys; sys.argv = [{__file__!r}, '--worker']; "
                   f"runpy.run_path({__file__!r}, run_name='__main__')")
            self.process = subprocess.Popen([sys.executable, "-c", run], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.workdir)

    _, client, topics, env = fresh_deployment("phases")
    app_id = env["SIZER_APP_ID"]
    env["SIZER_STANDBY_REPLICAS"] = str(args.standby)
    if args.code:
        env["PYTHONPATH"] = args.code
    logs.mkdir(parents=True, exist_ok=True)
    worker = Timed(f"{app_id}-0", logs, env)
    width = topics["signals"].partitions
    worker.start()
    worker.wait_ready()
    entries = list(spread_signals(args.portfolios, args.portfolios, seed=1))
    asyncio.run(publish(client, topics, entries))

    def probe(round_):
        batch = probes(width, round_, args.portfolios)
        ids = {v["signal_id"] for _, v in batch}

        async def both():
            waiting = asyncio.create_task(decided(client, topics.name("decisions"), ids, 300))
            await asyncio.sleep(0.3)
            await publish(client, topics, batch)
            return await waiting
        return asyncio.run(both())

    probe(0)
    time.sleep(2)
    rows = []
    for round_ in range(1, args.rounds + 1):
        logfile = worker.workdir / "worker.log"
        mark = logfile.stat().st_size
        sent = time.time()
        with open(logfile, "ab") as f:
            f.write(f"HARNESS sigterm {sent:.3f}\n".encode())
        stop_s = worker.signal(signal.SIGTERM)
        exited = time.time()
        with open(logfile, "ab") as f:
            f.write(f"HARNESS exited {exited:.3f}\n".encode())
        # probes go in as the new process starts: its first decision is the figure
        started_mono = time.monotonic()
        worker.start()
        times = probe(round_)
        first = min(times) - started_mono if times else float("nan")
        every = max(times) - started_mono if len(times) == width else float("nan")
        ready = worker.wait_ready()
        text = logfile.read_bytes()[mark:].decode(errors="replace")
        evs = events(text)
        print(f"\n== round {round_}: stop {stop_s:.2f} s, start to first decision {first:.2f} s, every partition {every:.2f} s")
        base = sent
        for at, label in evs:
            print(f"  {at - base:7.3f}  {label}")
        rows.append((stop_s, first, every))
        time.sleep(3)
    worker.signal(signal.SIGTERM)
    print("\nround  stop  first-decision  every-partition  stall(stop+first)")
    for i, (s, f, e) in enumerate(rows, 1):
        print(f"{i:5d} {s:5.2f} {f:15.2f} {e:16.2f} {s + f:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
