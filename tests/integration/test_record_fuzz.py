"""Record-level fuzzing through one real worker on the real broker (issue 19): keys
null, matching, mismatching and not UTF-8; values null, empty, not UTF-8, JSON of
every shape, valid messages with event times at and past every bound, and values
near and past every size limit on the way (the worker's producer and so the
dead letter at 1,000,000 bytes, the broker at 1,048,588); headers. Afterwards the
worker is still running, every input offset has exactly one outcome, and the
audit verifies every decision.

Bounded for CI: a few batches of records through one worker, about a minute."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.wire.models import MAX_EVENT_TIME_MS
from tests.builders import T0
from tests.integration.harness import Deployment
from tests.integration.records import BROKER_MAX_BYTES, Raw, assert_every_offset_has_one_outcome, send_raw

SKEW_MS = 60_000  # the conviction preset's max_future_skew_s
ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}
_ids = itertools.count()

TIMES = st.one_of(
    st.integers(T0, T0 + 10_000),
    st.sampled_from([
        0, -1, T0 * 1000, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
        1.767e12, "1767225600000", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
        "1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999-01:00",
        "10000-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:00", "2026-02-30T00:00:00Z",
    ]),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3),
                    max_leaves=8)
# near and past each limit: the dead letter's (producer's) and the broker's
SIZES = [999_000, 1_000_001, 1_010_004, BROKER_MAX_BYTES - 200, BROKER_MAX_BYTES + 100]


@st.composite
def message(draw, role: str) -> dict:
    ts = draw(TIMES)
    portfolio = draw(st.sampled_from(["fz1", "fz2", "fz3"]))
    if role == "signals":
        return {"signal_id": f"z{next(_ids)}", "portfolio_id": portfolio, "symbol": draw(st.sampled_from(
            ["ETH-USD", "FZ-A", "NOPE"])), "side": "buy", "score": draw(st.sampled_from(["0.9", "0.5", 1])),
            "price": draw(st.sampled_from(["2500", "1e-30", "0"])), "ts": ts}
    if role == "fills":
        return {"event_id": f"e{next(_ids)}", "portfolio_id": portfolio, "ts": ts, "type": "order_canceled",
                "order_id": "o-none"}
    symbol = draw(st.sampled_from(["ETH-USD", "FZ-A", "FZ-B"]))
    return {"symbol": symbol, "legs": [{"venue_symbol": "V", "side": "buy", "qty_step": draw(st.sampled_from(
        ["0.001", "0", "-1"])), "min_qty": "0", "max_qty": None, "min_notional": "0"}]}


@st.composite
def record(draw) -> Raw:
    role = draw(st.sampled_from(["signals", "fills", "instruments"]))
    body = draw(message(role))
    kind = draw(st.sampled_from(["message"] * 6 + ["null", "empty", "bytes", "json", "huge"]))
    value = {"message": lambda: json.dumps(body).encode(), "null": lambda: None, "empty": lambda: b"",
             "bytes": lambda: draw(st.binary(max_size=40)), "json": lambda: json.dumps(draw(JSON)).encode(),
             "huge": lambda: json.dumps({**body, "pad": "x" * draw(st.sampled_from(SIZES))}).encode()}[kind]()
    own_key = str(body.get("symbol" if role == "instruments" else "portfolio_id")).encode()
    # the broker refuses a null key on the compacted instruments topic: not a record there
    # and no client writes a record with neither key nor value
    keys = ["own", "own", "own", "other", "not-utf8"] + ([] if role == "instruments" or value is None else ["null"])
    key = {"own": own_key, "other": b"fz9", "not-utf8": b"\xff\xfe\x00", "null": None}[draw(st.sampled_from(keys))]
    headers = tuple(draw(st.lists(st.tuples(st.sampled_from(["h", "sizer.restores", "sizer.reason", ""]),
                                            st.binary(max_size=12)), max_size=2)))
    timestamp = draw(st.sampled_from([None, None, None, T0 - 3_600_000]))
    return Raw(role, key, value, headers, timestamp)


@pytest.fixture(scope="module")
def fuzzed(bootstrap, tmp_path_factory):
    deployment = Deployment.create(bootstrap, tmp_path_factory.mktemp("record-fuzz"))
    worker = deployment.worker("--preset", "conviction").start()
    deployment.publish([("instruments", ETH)])
    yield deployment, worker
    worker.kill()


BATCHES = 10
BATCH = 60


# no shrinking: each example costs a round trip through the worker, and a failure
# is reported with its whole batch
@settings(max_examples=BATCHES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(batch=st.lists(record(), min_size=BATCH, max_size=BATCH))
def test_fuzzed_records_never_stop_the_worker(fuzzed, batch):
    deployment, worker = fuzzed
    sent = send_raw(deployment, batch)
    refused = [(raw.role, len(raw.value or b""), repr(result)) for raw, result in sent if isinstance(result, Exception)]
    # only what is over the broker's limit (with the record's overhead) is refused, and never reaches the topic
    assert all(size > BROKER_MAX_BYTES - 1000 for _, size, _ in refused), refused
    # (instruments end on the worker's own transaction markers: its agent is waited for at the end)
    for role in ("signals", "fills"):
        deployment.wait_consumed(role, timeout_s=120)
    assert worker.alive(), worker.log()[-3000:]


def test_after_the_fuzz_every_offset_has_one_outcome_and_the_audit_verifies_every_decision(fuzzed):
    deployment, worker = fuzzed
    deadline = time.monotonic() + 60
    while True:  # the instruments agent may still be dead-lettering its last records
        try:
            counts = assert_every_offset_has_one_outcome(deployment, SKEW_MS)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert counts["decided"] > 0 and counts["dead_lettered"] > 0 and counts["applied"] > 0, counts
    assert worker.alive(), worker.log()[-3000:]
    code, report, stderr = deployment.audit()
    problems = {key: value for key, value in report.items()
                if isinstance(value, list) and value and key != "unresolvable_config_hashes"}
    assert (code, problems, report["verified"]) == (0, {}, counts["decided"]), (problems, stderr[-2000:])
