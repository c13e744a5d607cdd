"""A machine whose clock runs TEST_CLOCK_AHEAD_S seconds ahead, for the Python
processes a test starts with this directory on PYTHONPATH: `time.time()` (what the Kafka
client stamps each record it sends with) returns that much later."""

import os
import time

_AHEAD_S = float(os.environ.get("TEST_CLOCK_AHEAD_S") or 0)
if _AHEAD_S:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _AHEAD_S
    time.time_ns = lambda: _time_ns() + int(_AHEAD_S * 1e9)
