"""`make demo` (offline form): the demo session through the engine, as a table."""

from __future__ import annotations

import sys

from streams import decimals, journal
from streams.config import load_config
from streams.demo_session import PRESET, session
from streams.models import to_json
from streams.replay import replay
from streams import table


def run_offline() -> int:
    config = load_config(PRESET)
    lines = [journal.line(topic, value) for topic, value in session()]
    print(f"preset {PRESET}, config {config.config_hash}: {len(lines)} inputs replayed offline\n")
    print(table.header())
    replay(lines, config, lambda d, o: print(table.row(decimals.loads(to_json(d)))),
           lambda n, r: print(f"line {n}: {r}", file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(run_offline())
