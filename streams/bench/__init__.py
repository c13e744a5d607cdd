"""The benchmarks (`make bench`, `bench-core`, `bench-sweep`, `bench-audit`, `soak`)."""

from __future__ import annotations

import logging
from typing import Any, Callable


def run_bench(main: Callable[[], Any]) -> int:
    """A benchmark's exit code, with what the user can act on (a broker that cannot
    be reached or refuses us, bad `SIZER_*` or `SIZING_*` settings) as one line, as
    `sizer` reports it; aiokafka's own retry logs are left out of the benchmark's
    output."""
    from streams.cli import reporting
    from streams.worker.settings import load_settings

    def settings() -> Any:
        try:
            return load_settings()
        except Exception:  # noqa: BLE001 - the settings were the failure, already reported
            return None

    def checked_main() -> Any:
        # the sizing settings the contenders will read, checked before any starts
        # (else a bad one is a contender exiting half way through the run)
        from streams.config import load_config

        load_config()
        return main() or 0

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return reporting(checked_main, "bench", settings=settings)
