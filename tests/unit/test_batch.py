"""The batch lifecycle without a broker: `BatchHandler` against an in-memory sink,
state store, positions and instruments (issue 13)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D
from typing import Any, NamedTuple

import pytest
from prometheus_client import CollectorRegistry

from streams.config import load_config
from streams.faust_compat.events import current, current_event
from streams.kafka.io import Record
from streams.metrics import SizerMetrics
from streams.wire.models import Instrument, validate
from streams.processor import Processor
from streams.worker.batch import BatchHandler, BatchStatus
from streams.worker.positions import InputPositions
from streams.worker.tables import TableStore
from tests.builders import T0, canceled, instrument, leg, signal

X = validate(Instrument, instrument("X", leg("XUSDT", qty_step="0.01"))["value"])


class TP(NamedTuple):
    topic: str
    partition: int


class Message:
    """A faust message as the fetch loop hands it over (timestamp in float seconds)."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = topic, partition, offset, key, value
        self.timestamp = T0 / 1000
        self.headers: list[Any] = []
        self.tp = TP(topic, partition)


class Table(dict):
    """A faust table of bytes as the worker uses it: get, and a local store."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.data = self
        self.changelog_topic_name = f"{name}-changelog"


class Sink:
    """The output sink: every send and table write, in order; `fail_on` makes the
    n-th send raise (a broker refusing a record)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[Any] | None]] = []
        self.delivered_batches = 0
        self.fail_on: int | None = None

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers: Any = None) -> None:
        if self.fail_on is not None and len(self.sent) == self.fail_on:
            raise RuntimeError("the broker refused the record")
        assert current_event() is not None, "an output sent outside of any input event"
        self.sent.append((topic, key, value, headers))

    async def put(self, table: Table, key: bytes, value: bytes | None) -> None:
        assert current_event() is not None, "a table written outside of any input event"
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    async def delivered(self) -> None:
        self.delivered_batches += 1

    def to(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(value) for name, _, value, _ in self.sent if name == topic and value]


class Positions(InputPositions):
    """Input positions over an in-memory topic instead of a Kafka read."""

    def __init__(self, table: Table, outputs: Sink, log: dict[tuple[str, int], list[Message]]) -> None:
        super().__init__(table, outputs, ["signals", "fills", "controls"], "unused:1", "read_committed")
        self.log = log

    async def read(self, topic: str, partition: int, start: int, stop: int) -> list[Record]:
        return [Record(m.topic, m.partition, m.offset, m.key, m.value, (), T0)
                for m in self.log[(topic, partition)] if start <= m.offset < stop]


class View(dict):
    def __init__(self) -> None:
        super().__init__(X=X)
        self.caught_up = asyncio.Event()
        self.caught_up.set()

    def offset_of(self, symbol: str) -> int | None:
        return 7 if symbol in self else None

    async def refresh(self, since: float) -> None:
        pass


class Consumer:
    flow_active = True

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        return None


class World:
    """One handler over in-memory state; `log` holds every record published so far."""

    def __init__(self, width: int = 1, portfolios: Any = None, framing: Any = None) -> None:
        self.config = load_config("conviction")
        self.sink = Sink()
        self.tables = TableStore(Table("exposure"), Table("streak"), Table("controls"), Table("windows"),
                                 self.config, self.sink, current_event)
        self.log: dict[tuple[str, int], list[Message]] = {("signals", 0): [], ("fills", 0): []}
        self.positions = Positions(Table("input-positions"), self.sink, self.log)
        self.metrics = SizerMetrics(CollectorRegistry())
        self.failures: list[BaseException] = []
        self.handler = BatchHandler(
            app_id="test", config=self.config, processor=Processor(self.config, self.tables, View()),
            tables=self.tables, positions=self.positions, view=View(), outputs=self.sink, metrics=self.metrics,
            consumer=lambda: Consumer({TP("signals", 0), TP("fills", 0)}), lock=asyncio.Lock(),
            roles={"signals": "signals", "fills": "fills", "controls": "controls"},
            partitions={"signals": width, "fills": width, "controls": width},
            outputs_topics={"orders": "orders", "decisions": "decisions", "dlq": "dlq"}, dlq_max_bytes=1_000_000,
            current=current, on_failure=self.failures.append, portfolios=portfolios,
            **({} if framing is None else {"framing": framing}),
        )

    def record(self, topic: str, value: Any, key: bytes | None = b"p1") -> Message:
        records = self.log[(topic, 0)]
        raw = value if value is None or isinstance(value, bytes) else json.dumps(value).encode()
        message = Message(topic, 0, len(records), key, raw)
        records.append(message)
        return message

    def run(self, messages: list[Message]) -> None:
        asyncio.run(self.handler.handle_inputs(messages))

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def sig(n: int, price: str = "10") -> dict[str, Any]:
    return signal("p1", "X", "0.5", price, T0 + n, signal_id=f"s{n}")["value"]


def test_inputs_are_decided_in_offset_order_and_the_positions_move_past_them():
    world = World()
    batch = [world.record("signals", sig(n)) for n in range(3)]
    world.run(batch)
    decisions = world.sink.to("decisions")
    assert [d["signal_id"] for d in decisions] == ["s0", "s1", "s2"]
    assert [d["trace"]["input"]["offset"] for d in decisions] == [0, 1, 2]
    assert world.positions.next_offset("signals", 0) == 3
    assert world.sink.delivered_batches == 1
    assert world.counter("sizer_batch_seconds_count") == 1 and world.counter("sizer_batch_seconds_sum") > 0
    # state was written once per portfolio, at the end of the batch, under an input event
    assert json.loads(world.tables.exposure[b"p1"])["reservations"]


def test_redelivered_offsets_are_skipped_and_counted():
    world = World()
    first = [world.record("signals", sig(n)) for n in range(2)]
    world.run(first)
    later = world.record("signals", sig(2))
    world.run(first + [later])
    assert [d["signal_id"] for d in world.sink.to("decisions")] == ["s0", "s1", "s2"]
    assert world.counter("sizer_inputs_redelivered_total", topic="signals") == 2
    assert world.positions.next_offset("signals", 0) == 3


def test_offsets_the_fetch_skipped_are_read_back_and_processed_first():
    world = World()
    records = [world.record("signals", sig(n)) for n in range(4)]
    world.run([records[3]])  # 0..2 never delivered
    assert [d["signal_id"] for d in world.sink.to("decisions")] == ["s0", "s1", "s2", "s3"]
    assert world.counter("sizer_inputs_recovered_total", topic="signals") == 3
    assert world.positions.next_offset("signals", 0) == 4


def test_bad_records_are_dead_lettered_with_their_reason_and_the_rest_goes_on():
    world = World()
    batch = [world.record("signals", None), world.record("signals", b"{oops"),
             world.record("signals", sig(2), key=None), world.record("signals", sig(3))]
    world.run(batch)
    dead = [(dict(headers)["sizer.reason"], key, value) for topic, key, value, headers in world.sink.sent
            if topic == "dlq"]
    assert [reason for reason, _, _ in dead] == [b"NULL_VALUE", b"INVALID_JSON", b"KEY_MISMATCH"]
    assert dead[1][2] == b"{oops"  # the original bytes
    assert [d["signal_id"] for d in world.sink.to("decisions")] == ["s3"]
    assert world.positions.next_offset("signals", 0) == 4
    assert world.counter("sizer_dead_letters_total", topic="signals", reason="KEY_MISMATCH") == 1


def test_a_portfolio_off_its_keys_partition_is_dead_lettered_wrong_partition_never_sized():
    from streams.wire.admission import home_partition

    world = World(width=6)  # every record of this world is on partition 0
    home_elsewhere = next(f"p{n}" for n in range(100) if home_partition(f"p{n}".encode(), 6) != 0)
    home_here = next(f"p{n}" for n in range(100) if home_partition(f"p{n}".encode(), 6) == 0)
    batch = [world.record("signals", signal(pid, "X", "0.5", "10", T0, signal_id=pid)["value"], key=pid.encode())
             for pid in (home_elsewhere, home_here)]
    world.run(batch)
    dead = [dict(headers) for topic, _, _, headers in world.sink.sent if topic == "dlq"]
    assert [d["sizer.reason"] for d in dead] == [b"WRONG_PARTITION"]
    assert f"its key's partition is {home_partition(home_elsewhere.encode(), 6)} of 6".encode() in dead[0][
        "sizer.detail"]
    assert [d["portfolio_id"] for d in world.sink.to("decisions")] == [home_here]
    assert world.counter("sizer_dead_letters_total", topic="signals", reason="WRONG_PARTITION") == 1


def test_with_registration_on_inputs_of_unregistered_portfolios_are_dead_lettered_unknown_portfolio():
    from streams.kafka.settings import ConnectionSettings
    from streams.worker.registry import PortfolioRegistry

    registry = PortfolioRegistry(ConnectionSettings().for_role("test"), "sizer-portfolios", 1)
    registry.apply(b"p1", b'{"portfolio_id": "p1"}', 0)
    registry.apply(b"gone", b'{"portfolio_id": "gone"}', 1)
    registry.apply(b"gone", None, 2)  # deregistered
    registry.caught_up.set()
    world = World(portfolios=registry)
    batch = [world.record("signals", sig(0)),
             world.record("signals", signal("gone", "X", "0.5", "10", T0, signal_id="g")["value"], key=b"gone"),
             world.record("signals", signal("new-1", "X", "0.5", "10", T0, signal_id="n")["value"], key=b"new-1"),
             world.record("fills", canceled("new-2", "o-1", T0)["value"], key=b"new-2")]
    world.run(batch)
    dead = [(dict(headers)["sizer.reason"], key) for topic, key, _, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"UNKNOWN_PORTFOLIO", b"gone"), (b"UNKNOWN_PORTFOLIO", b"new-1"),
                    (b"UNKNOWN_PORTFOLIO", b"new-2")]
    assert [d["portfolio_id"] for d in world.sink.to("decisions")] == ["p1"]
    assert world.tables.exposure.keys() == {b"p1"}  # no state for any other portfolio
    assert world.counter("sizer_dead_letters_total", topic="signals", reason="UNKNOWN_PORTFOLIO") == 2


def test_a_batch_that_fails_half_way_is_abandoned_and_moves_no_position():
    world = World()
    world.sink.fail_on = 1  # the first signal's order goes, its decision is refused
    batch = [world.record("signals", sig(n)) for n in range(3)]
    world.run(batch)
    assert len(world.failures) == 1 and "refused" in str(world.failures[0])
    assert world.positions.next_offset("signals", 0) == 0
    assert world.sink.delivered_batches == 0
    assert world.counter("sizer_batch_seconds_count") == 0  # only batches handled whole are timed
    assert b"p1" not in world.tables.exposure  # nothing of the batch reached the tables


def test_fills_and_commands_go_through_the_same_batch():
    world = World()
    accepted = world.record("signals", sig(0))
    world.run([accepted])
    order = world.sink.to("orders")[0]
    fill = world.record("fills", {"event_id": "f1", "portfolio_id": "p1", "ts": T0 + 5, "type": "order_filled",
                                  "order_id": order["order_id"], "symbol": "X", "qty": order["qty"], "price": "10",
                                  "final": True})
    world.run([fill])
    state = world.tables.load("p1")
    assert state.exposure.positions["X"].qty == D(order["qty"]) and not state.exposure.reservations
    assert world.counter("sizer_fill_events_total", type="order_filled", outcome="applied") == 1


def test_the_lifecycle_refuses_to_deliver_twice():
    from streams.worker.batch import Batch

    batch = Batch([])
    batch.delivered()
    assert batch.status is BatchStatus.DELIVERED
    with pytest.raises(RuntimeError, match="only while open"):
        batch.delivered()


def test_a_delivered_batch_takes_no_more_inputs_and_a_failed_one_is_never_delivered():
    from streams.worker.batch import Batch, BatchStateError
    from streams.worker.positions import Input

    event = Input(Message("signals", 0, 7, b"p1", b"{}"))
    delivered = Batch([event])
    delivered.processed(("signals", 0), 8, event)
    delivered.delivered()
    with pytest.raises(BatchStateError, match="processed only while open, not delivered"):
        delivered.processed(("signals", 0), 9, event)
    assert delivered.next_offset(("signals", 0)) == 8

    failed = Batch([event])
    failed.processed(("signals", 0), 8, event)
    failed.failed()
    with pytest.raises(BatchStateError, match="delivered only while open, not failed"):
        failed.delivered()
    with pytest.raises(BatchStateError, match="processed only while open, not failed"):
        failed.processed(("signals", 0), 9, event)
    assert failed.status is BatchStatus.FAILED


def test_dedupe_windows_are_stored_chunk_by_chunk_each_chunk_once():
    world = World()
    world.config = world.config.model_copy(update={"signal_dedupe_window": 128})
    world.tables.config = world.handler.config = world.handler.processor.config = world.config
    world.run([world.record("signals", sig(n)) for n in range(70)])  # one chunk of 64 closed, 6 ids open
    exposure = json.loads(world.tables.exposure[b"p1"])
    assert exposure["seen_signals"] is None
    assert exposure["seen_signals_chunks"] == {"first": 0, "closed": 1, "open": sorted(f"s{n}" for n in range(64, 70))}
    assert sorted(json.loads(world.tables.windows[b"p1\x1fseen_signals\x1f0"])) == sorted(f"s{n}" for n in range(64))

    # more batches: the closed chunk is not written again; a second closes; the first
    # is let go (128 ids are covered without it) and deleted
    puts: list[bytes] = []
    original = world.sink.put

    async def recording(table, key, value):
        puts.append(key)
        await original(table, key, value)

    world.sink.put = recording
    world.run([world.record("signals", sig(n)) for n in range(70, 100)])
    assert b"p1\x1fseen_signals\x1f0" not in puts
    world.run([world.record("signals", sig(n)) for n in range(100, 200)])
    exposure = json.loads(world.tables.exposure[b"p1"])
    assert exposure["seen_signals_chunks"] == {
        "first": 1, "closed": 2, "open": sorted(f"s{n}" for n in range(192, 200))}
    assert b"p1\x1fseen_signals\x1f0" not in world.tables.windows
    assert sorted(json.loads(world.tables.windows[b"p1\x1fseen_signals\x1f2"])) == sorted(
        f"s{n}" for n in range(128, 192))

    # a worker that reads the tables afresh sees the same window: an old id is a duplicate
    world.tables.forget()
    state = world.tables.load("p1")
    assert len(state.exposure.seen_signals) == 136 and "s64" in state.exposure.seen_signals
    assert "s63" not in state.exposure.seen_signals
    world.tables.end_batch()
    world.run([world.record("signals", sig(64))])
    assert world.sink.to("decisions")[-1]["reason"] == "DUPLICATE_SIGNAL"


def test_a_window_written_whole_before_is_read_and_then_stored_by_chunks():
    world = World()
    ids = [[f"s{n}" for n in range(64)], ["s64"]]
    world.tables.exposure[b"p1"] = json.dumps({
        "positions": {}, "reservations": {}, "marks": {}, "latest_ts": None, "last_fill_offset": None,
        "seen_signals": ids, "ended_orders": []}).encode()
    world.run([world.record("signals", sig(3)), world.record("signals", sig(65))])
    decisions = world.sink.to("decisions")
    assert decisions[0]["reason"] == "DUPLICATE_SIGNAL" and decisions[1]["outcome"] == "accepted"
    exposure = json.loads(world.tables.exposure[b"p1"])
    assert exposure["seen_signals_chunks"] == {"first": 0, "closed": 1, "open": ["s64", "s65"]}
    assert json.loads(world.tables.windows[b"p1\x1fseen_signals\x1f0"]) == sorted(ids[0])


def test_a_missing_chunk_forgets_its_ids_and_the_window_is_stored_again():
    world = World()
    world.run([world.record("signals", sig(n)) for n in range(130)])  # chunks 0 and 1 closed
    del world.tables.windows[b"p1\x1fseen_signals\x1f0"]
    world.tables.forget()
    world.run([world.record("signals", sig(130))])
    exposure = json.loads(world.tables.exposure[b"p1"])
    assert exposure["seen_signals_chunks"]["first"] == 2 and exposure["seen_signals_chunks"]["closed"] == 1
    assert b"p1\x1fseen_signals\x1f1" not in world.tables.windows  # the old numbers deleted
    assert sorted(json.loads(world.tables.windows[b"p1\x1fseen_signals\x1f2"])) == sorted(
        f"s{n}" for n in range(64, 128))


def test_a_worker_of_the_earlier_format_fails_on_a_chunked_record_rather_than_misreading_it():
    """Before the windows table, a window was read as a list of chunks
    (`tuple(frozenset(chunk) for chunk in data)`): a reference under the same field
    would have been read as chunks of its keys' letters, and resent inputs decided again."""
    world = World()
    world.run([world.record("signals", sig(n)) for n in range(70)])
    world.run([world.record("fills", {"event_id": "c1", "portfolio_id": "p1", "ts": T0 + 99,
                                      "type": "position_closed", "symbol": "X", "qty": "1", "price": "10",
                                      "realized_pnl": "1"})])

    def earlier_reader(data):
        return tuple(frozenset(chunk) for chunk in data)

    for table, window in ((world.tables.exposure, "seen_signals"), (world.tables.streak, "seen_fills")):
        with pytest.raises(TypeError):
            earlier_reader(json.loads(table[b"p1"])[window])


def test_a_portfolio_named_by_a_per_portfolio_table_is_registered_without_a_registry_record():
    from streams.config import SizingConfig
    from streams.kafka.settings import ConnectionSettings
    from streams.worker.registry import PortfolioRegistry

    config = SizingConfig.from_effective({**load_config("conviction").effective(),
                                          "portfolios": {"desk-a-*": {"portfolio_cap": "1500"}, "solo": {}}})
    registry = PortfolioRegistry(ConnectionSettings().for_role("test"), "sizer-portfolios", 1,
                                 configured=config.configures)
    registry.caught_up.set()
    world = World(portfolios=registry)
    batch = [world.record("signals", signal(pid, "X", "0.5", "10", T0, signal_id=pid)["value"], key=pid.encode())
             for pid in ("desk-a-7", "solo", "desk-b-1", "solo-2")]
    world.run(batch)
    assert [d["portfolio_id"] for d in world.sink.to("decisions")] == ["desk-a-7", "solo"]
    dead = [key for topic, key, _, _ in world.sink.sent if topic == "dlq"]
    assert dead == [b"desk-b-1", b"solo-2"]


def test_a_record_off_its_keys_partition_does_not_move_its_portfolios_series():
    # a CRC32 producer's record for a halted portfolio, in the batch that halted it, on
    # another partition this worker also owns: the portfolio's series stay with its own
    # partition (when that other partition moves away, its halted series must not go)
    from streams.wire.admission import home_partition
    from tests.builders import control

    world = World(width=6)
    home = home_partition(b"p1", 6)
    other = (home + 1) % 6
    world.handler.consumer = lambda: Consumer({TP("controls", home), TP("signals", other)})
    halt = Message("controls", home, 0, b"p1", json.dumps(control("p1", "halt", T0)["value"]).encode())
    stray = Message("signals", other, 0, b"p1", json.dumps(sig(1)).encode())
    world.log.update({("controls", home): [halt], ("signals", other): [stray]})
    world.run([halt, stray])

    assert [dict(headers)["sizer.reason"] for topic, _, _, headers in world.sink.sent if topic == "dlq"] == [
        b"WRONG_PARTITION"]
    halted = {"portfolio": "p1", "reason": "HALTED", "operator": "alice"}
    assert world.counter("sizer_portfolio_halted", **halted) == 1
    world.metrics.retain([home])  # the other partition moved to another worker
    assert world.counter("sizer_portfolio_halted", **halted) == 1


def test_with_a_schema_registry_outputs_are_framed_and_inputs_of_a_foreign_id_dead_lettered():
    from streams.wire.framing import Framing

    framing = Framing(writes={"orders": 21, "decisions": 22}, accepts={"signals": frozenset({5, 6})})
    world = World(framing=framing)
    framed = [b"\x00\x00\x00\x00" + bytes([schema_id]) + json.dumps(sig(n)).encode()
              for n, schema_id in enumerate([5, 22, 6])]
    plain = json.dumps(sig(3)).encode()
    world.run([world.record("signals", value) for value in [*framed, plain]])
    decisions = [value for topic, _, value, _ in world.sink.sent if topic == "decisions"]
    assert [value[:5] for value in decisions] == [b"\x00\x00\x00\x00\x16"] * 2  # id 22, big-endian
    assert [json.loads(value[5:])["signal_id"] for value in decisions] == ["s0", "s2"]
    orders = [value for topic, _, value, _ in world.sink.sent if topic == "orders"]
    assert orders and all(value[:5] == b"\x00\x00\x00\x00\x15" for value in orders)
    dead = [(dict(headers)["sizer.reason"], value) for topic, _, value, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"SCHEMA_ID", framed[1]), (b"SCHEMA_ID", plain)]  # the original bytes
    assert world.positions.next_offset("signals", 0) == 4


def test_a_signal_framed_with_a_version_registered_since_start_up_is_decided_and_with_the_registry_down_dead_lettered():
    from streams.errors import RegistryUnavailable
    from streams.wire.framing import Framing, SchemaIds, frame

    down = []

    async def subjects_of(schema_id: int) -> frozenset[str]:
        if down:
            raise RegistryUnavailable("Schema Registry http://registry:8081 unreachable: ClientConnectorError")
        return frozenset({"signals-value"} if schema_id == 7 else {"decisions-value"})

    framing = Framing(writes={"decisions": 22}, accepts={"signals": frozenset({5})},
                      subjects={"signals": "signals-value"}, learned=SchemaIds(subjects_of))
    world = World(framing=framing)
    newer, foreign = frame(7, json.dumps(sig(0)).encode()), frame(22, json.dumps(sig(1)).encode())
    world.run([world.record("signals", newer), world.record("signals", foreign)])
    down.append(True)
    unknown = frame(8, json.dumps(sig(2)).encode())
    world.run([world.record("signals", unknown), world.record("signals", frame(7, json.dumps(sig(3)).encode()))])
    assert [json.loads(value[5:])["signal_id"] for topic, _, value, _ in world.sink.sent if topic == "decisions"] == \
        ["s0", "s3"]  # id 7, once learned, needs no registry
    dead = [(dict(headers)["sizer.reason"], value) for topic, _, value, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"SCHEMA_ID", foreign), (b"SCHEMA_REGISTRY_UNAVAILABLE", unknown)]  # the original bytes
    assert world.positions.next_offset("signals", 0) == 4


def test_a_batch_of_ids_unknown_to_a_slow_registry_waits_on_its_lookups_at_once_not_one_after_the_other():
    import time

    from streams.wire.framing import Framing, SchemaIds, frame

    asked = []

    async def subjects_of(schema_id: int) -> frozenset[str]:  # each answer takes 0.3 s
        asked.append(schema_id)
        await asyncio.sleep(0.3)
        return frozenset({"signals-value"} if schema_id % 2 == 0 else {"decisions-value"})

    framing = Framing(writes={"decisions": 22}, accepts={"signals": frozenset({5})},
                      subjects={"signals": "signals-value"}, learned=SchemaIds(subjects_of))
    world = World(framing=framing)
    values = [frame(100 + n, json.dumps(sig(n)).encode()) for n in range(10)] + \
        [frame(100, json.dumps(sig(10)).encode())]  # an id seen twice: asked once
    started = time.monotonic()
    world.run([world.record("signals", value) for value in values])
    took = time.monotonic() - started
    assert took < 1.5, f"{took:.1f} s: the lookups one after the other"
    assert sorted(asked) == list(range(100, 110))
    assert [json.loads(value[5:])["signal_id"] for topic, _, value, _ in world.sink.sent if topic == "decisions"] == \
        ["s0", "s2", "s4", "s6", "s8", "s10"]
    dead = [(dict(headers)["sizer.reason"], value) for topic, _, value, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"SCHEMA_ID", values[n]) for n in (1, 3, 5, 7, 9)]
    assert world.positions.next_offset("signals", 0) == 11


def test_a_registry_that_accepts_connections_and_never_answers_holds_a_batch_one_timeout():
    import socket
    import time

    from streams.kafka.schema_registry import SchemaRegistry
    from streams.wire.framing import Framing, SchemaIds, frame

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections accepted by the kernel, never read nor answered
    try:
        registry = SchemaRegistry(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        framing = Framing(writes={"decisions": 22}, accepts={"signals": frozenset({5})},
                          subjects={"signals": "signals-value"}, learned=SchemaIds(registry.subjects_of))
        world = World(framing=framing)
        values = [frame(100 + n, json.dumps(sig(n)).encode()) for n in range(8)] + \
            [frame(5, json.dumps(sig(8)).encode())]
        started = time.monotonic()
        world.run([world.record("signals", value) for value in values])
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < 1.2, f"{took:.1f} s"
    dead = [(dict(headers)["sizer.reason"], value) for topic, _, value, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"SCHEMA_REGISTRY_UNAVAILABLE", value) for value in values[:8]]
    assert [json.loads(value[5:])["signal_id"] for topic, _, value, _ in world.sink.sent if topic == "decisions"] == \
        ["s8"]  # a known id reads on
    assert world.positions.next_offset("signals", 0) == 9 and not world.failures


def test_an_instrument_unverified_for_a_registry_outage_is_dead_lettered_and_nothing_restored_over_it():
    from streams.errors import RegistryUnavailable
    from streams.wire.framing import Framing, SchemaIds, frame

    async def subjects_of(schema_id: int) -> frozenset[str]:
        raise RegistryUnavailable("Schema Registry http://registry:8081 unreachable: ClientConnectorError")

    world = World(framing=Framing(accepts={"instruments": frozenset({4})}, subjects={"instruments": "i-value"},
                                  learned=SchemaIds(subjects_of)))
    waited = []

    async def reached(offset: int, partition: int = 0) -> bool:
        waited.append(offset)  # the view waits for the registry: the agent would wait 30 s here
        return False

    world.handler.view.reached = reached
    world.handler.view.in_force = lambda symbol: (3, b"the valid record before")
    world.handler.roles["instruments"] = "instruments"
    value = frame(9, json.dumps(instrument("X", leg("XUSDT"))["value"]).encode())
    message = Message("instruments", 0, 5, b"X", value)
    class Event:
        def __init__(self, message: Message) -> None:
            self.message = message

    event = Event(message)

    async def agent():
        with current(event):
            await world.handler.check_instrument(event)

    asyncio.run(agent())
    assert [(topic, dict(headers)["sizer.reason"], sent) for topic, _, sent, headers in world.sink.sent] == \
        [("dlq", b"SCHEMA_REGISTRY_UNAVAILABLE", value)]
    assert waited == []


def test_a_flood_of_bogus_ids_in_one_batch_is_dead_lettered_record_by_record_with_bounded_lookups():
    from streams.wire.framing import LOOKUPS_PER_RECHECK, Framing, SchemaIds, frame

    asked = []

    async def subjects_of(schema_id: int) -> frozenset[str]:
        asked.append(schema_id)
        await asyncio.sleep(0.01)
        return frozenset()

    framing = Framing(writes={"decisions": 22}, accepts={"signals": frozenset({5})},
                      subjects={"signals": "signals-value"}, learned=SchemaIds(subjects_of))
    world = World(framing=framing)
    values = [frame(1000 + n % 300, json.dumps(sig(n)).encode()) for n in range(600)]  # 300 ids, each twice
    values.insert(300, frame(5, json.dumps(sig(600)).encode()))
    world.run([world.record("signals", value) for value in values])
    assert sorted(asked) == list(range(1000, 1000 + LOOKUPS_PER_RECHECK))
    dead = [(dict(headers)["sizer.reason"], value) for topic, _, value, headers in world.sink.sent if topic == "dlq"]
    assert dead == [(b"SCHEMA_ID", value) for value in values if value[:5] != frame(5, b"")]
    assert [json.loads(value[5:])["signal_id"] for topic, _, value, _ in world.sink.sent if topic == "decisions"] == \
        ["s600"]
    assert world.positions.next_offset("signals", 0) == 601 and not world.failures


def test_ended_orders_are_encoded_once_each_and_the_record_is_the_same_bytes(monkeypatch):
    """An ended order never changes: the worker encodes it once, while it stays among the
    portfolio's ended orders, and the exposure record is byte for byte what encoding the
    whole state gives."""
    from streams.engine.state import ENDED_ORDERS_KEPT, ended_order_to_wire, exposure_to_wire
    from streams.wire import decimals
    from streams.worker import tables as tables_module

    world = World()
    # every reservation lapses before the next signal (2 s later): one more ended order a batch
    world.config = type(world.config).model_validate({
        **world.config.model_dump(), "reservation_ttl_s": "1", "max_signal_age_s": "0.5", "max_future_skew_s": "0.5"})
    world.tables.config = world.handler.config = world.handler.processor.config = world.config
    encoded: list[str] = []

    def counting(order_id, order):
        encoded.append(order_id)
        return ended_order_to_wire(order_id, order)

    monkeypatch.setattr(tables_module, "ended_order_to_wire", counting)

    def one_signal(n: int) -> None:
        message = world.record("signals", signal("p1", "X", "0.5", "10", T0 + 2000 * n, signal_id=f"s{n}")["value"])
        message.timestamp = (T0 + 2000 * n) / 1000
        world.run([message])

    for n in range(ENDED_ORDERS_KEPT + 6):  # past the mapping's bound: the oldest are let go
        one_signal(n)
        state = world.tables._stored["p1"]
        ended = list(state.exposure.ended_orders)
        assert len(ended) == min(n, ENDED_ORDERS_KEPT)
        raw = world.tables.exposure[b"p1"]
        record = json.loads(raw)
        assert [entry[0] for entry in record["ended_orders"]] == ended
        whole = exposure_to_wire(state.exposure, window=False)
        whole["seen_signals_chunks"] = record["seen_signals_chunks"]
        assert raw == decimals.dumps(whole).encode()
        if n >= 3:  # two ended orders written before: only the newest is encoded now
            assert encoded[-1:] == [ended[-1]] and encoded.count(ended[-1]) == 1
    assert world.sink.to("decisions")[-1]["outcome"] == "accepted"
    assert len(encoded) == len(set(encoded)) == ENDED_ORDERS_KEPT + 5  # each once (the very first with the record)

    # partitions moving: the encoded entries go with the decoded states, and come back the same
    world.tables.forget()
    before = len(encoded)
    one_signal(ENDED_ORDERS_KEPT + 6)
    assert len(encoded) - before == ENDED_ORDERS_KEPT
