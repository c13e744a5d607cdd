"""`sizer audit`: re-derive every decision from topic history and compare it,
field by field, with what was recorded.

Reads signals, fills, instruments, decisions, orders, the dead-letter topic and
the configuration topic; rebuilds each portfolio's state in the interleaving the
decisions recorded; re-runs every decision with the configuration its hash
names. Everything that does not verify is reported by name.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from streams.wire import decimals
from streams.config import SizingConfig
from streams.errors import ConfigError, InvalidMessage
from streams.history.interleaving import Instruments, admitted, dead_lettered, recorded_interleaving, rederive
from streams.kafka.io import Record, read_topic
from streams.kafka.settings import ClientConfig
from streams.wire.models import parse_event_time, to_json
from streams.history.progress import Progress
from streams.kafka.topics import TopicSet
from streams.wire.roles import ROLES
from streams.text import counted



def differences(recorded: Any, derived: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every leaf field path where two JSON values differ, with both values."""
    if isinstance(recorded, dict) and isinstance(derived, dict):
        for key in list(recorded) + [k for k in derived if k not in recorded]:
            yield from differences(recorded.get(key), derived.get(key), f"{path}.{key}" if path else key)
    elif isinstance(recorded, list) and isinstance(derived, list) and len(recorded) == len(derived):
        for index, (a, b) in enumerate(zip(recorded, derived)):
            yield from differences(a, b, f"{path}[{index}]")
    elif recorded != derived:
        yield path, recorded, derived


@dataclass
class AuditReport:
    events: int = 0
    verified: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    signals_without_decision: list[dict[str, Any]] = field(default_factory=list)
    decisions_without_order: list[dict[str, Any]] = field(default_factory=list)
    orders_without_decision: list[dict[str, Any]] = field(default_factory=list)
    duplicate_decisions: list[dict[str, Any]] = field(default_factory=list)
    duplicate_orders: list[dict[str, Any]] = field(default_factory=list)
    unresolvable_config_hashes: list[str] = field(default_factory=list)
    decisions_for_unknown_signals: list[dict[str, Any]] = field(default_factory=list)
    # decisions that cannot be re-derived (their configuration is gone), and why
    unverifiable: list[dict[str, Any]] = field(default_factory=list)
    # input records with no outcome, or with two (a decision and a dead letter)
    inputs_unaccounted: list[dict[str, Any]] = field(default_factory=list)
    instrument_versions_missing: int = 0
    seconds: float = 0.0  # wall time of the whole audit, reading the topics included (set by the caller)

    PROBLEMS = ("mismatches", "signals_without_decision", "decisions_without_order", "orders_without_decision",
                "duplicate_decisions", "duplicate_orders", "unresolvable_config_hashes",
                "decisions_for_unknown_signals", "unverifiable", "inputs_unaccounted")

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.PROBLEMS)

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in ("events", "verified", *self.PROBLEMS,
                                                        "instrument_versions_missing", "seconds")}
        return {"ok": self.ok, **data}

    def summary(self) -> str:
        lines = [f"audit: {counted(self.verified, 'decision')} verified, {counted(self.events, 'event')} read, "
                 f"audit took {self.seconds:.1f} s"]
        if self.instrument_versions_missing:
            lines.append(f"  note: {counted(self.instrument_versions_missing, 'decision')} used an instrument "
                         "version the compacted topic no longer holds; the latest version stood in")
        for name in self.PROBLEMS:
            items = getattr(self, name)
            if not items:
                continue
            lines.append(f"  {name.replace('_', ' ')}: {len(items)}")
            for item in items[:20]:
                lines.append(f"    {_line(item)}")
            if len(items) > 20:
                lines.append(f"    ... and {len(items) - 20} more (--json lists all)")
        lines.append("audit: OK" if self.ok else "audit: FAILED")
        return "\n".join(lines)


def _line(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    return " ".join(f"{key}={decimals.dumps(value) if not isinstance(value, str) else value}"
                    for key, value in item.items())


def published_configs(records: Iterable[Record]) -> Iterator[tuple[Record, SizingConfig]]:
    """The records of the configuration topic that hold a valid configuration under
    its own hash, each with that configuration; the others are skipped."""
    for record in records:
        try:
            data = record.json()
            config = SizingConfig.from_effective(data["config"])
        except (ValueError, KeyError, TypeError, ConfigError):
            continue
        if config.config_hash == data.get("config_hash"):
            yield record, config


class ConfigResolver:
    """config_hash -> SizingConfig, from the records of the configuration topic."""

    def __init__(self, records: list[Record]) -> None:
        self._configs: dict[str, SizingConfig] = {config.config_hash: config
                                                  for _, config in published_configs(records)}
        self.unresolvable: set[str] = set()

    def __call__(self, config_hash: str) -> SizingConfig | None:
        config = self._configs.get(config_hash)
        if config is None:
            self.unresolvable.add(config_hash)
        return config


async def read_history(client: ClientConfig, topics: TopicSet, progress: "Progress | None" = None) -> dict[str, list[Record]]:
    """Every record of every topic the audit needs, read concurrently."""
    async def one(role: str) -> tuple[str, list[Record]]:
        spec = topics[role]
        records = await read_topic(client, spec.name, spec.partitions, timeout_s=600)
        if progress:
            progress.note(f"read {len(records)} {role}")
        return role, records

    return dict(await asyncio.gather(*(one(role) for role in ROLES)))


def settle(history: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """Keep the cyclic garbage collector off the loaded history: it is read-only input,
    and walking hundreds of thousands of records on every gen-2 pass costs a third
    of the audit's time on long histories."""
    import gc

    gc.collect()
    gc.freeze()
    return history


def in_scope(decision: dict[str, Any], portfolio: str | None, start: int | None, end: int | None) -> bool:
    if portfolio is not None and decision["portfolio_id"] != portfolio:
        return False
    ts = decision.get("trace", {}).get("signal", {}).get("ts")
    ts = parse_event_time(ts) if ts is not None else None  # the trace writes RFC 3339
    if ts is not None and ((start is not None and ts < start) or (end is not None and ts > end)):
        return False
    return True


def audit(history: dict[str, list[Record]], portfolio: str | None = None, start: int | None = None,
          end: int | None = None, progress: "Progress | None" = None) -> AuditReport:
    """Verify every decision in scope; state is always rebuilt from the beginning."""
    report = AuditReport(events=sum(len(records) for records in history.values()))
    resolver = ConfigResolver(history["config"])
    instruments = Instruments(history["instruments"])

    # decoded once; a record that is no decision of the worker's (a tombstone) is left out
    decisions = [(record, data) for record in history["decisions"] if isinstance(data := record.json(), dict)]
    decisions_at: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for record, decision in decisions:
        position = decision["trace"]["input"]
        decisions_at[(position["partition"], position["offset"])].append(decision)
    orders_by_id: dict[str, list[tuple[Record, dict[str, Any]]]] = defaultdict(list)
    for record in history["orders"]:
        order = record.json()
        if not isinstance(order, dict):
            continue
        orders_by_id[order["order_id"]].append((record, order))
    dead_letters = dead_lettered(history["dlq"])
    signals_topic = _name(history, "signals")
    dead = {(partition, offset) for (topic, partition, offset) in dead_letters if topic == signals_topic}

    signal_positions = {(r.partition, r.offset) for r in history["signals"]}
    for (partition, offset), recorded_there in decisions_at.items():
        if (partition, offset) not in signal_positions:
            report.decisions_for_unknown_signals.append(
                {"signal_id": recorded_there[0]["signal_id"], "partition": partition, "offset": offset})
        if len(recorded_there) > 1:
            report.duplicate_decisions.append({"signal_id": recorded_there[0]["signal_id"], "partition": partition,
                                               "offset": offset, "count": len(recorded_there)})
    for record in history["signals"]:
        if (record.partition, record.offset) in decisions_at and (record.partition, record.offset) in dead:
            report.inputs_unaccounted.append({"topic": record.topic, "partition": record.partition,
                                              "offset": record.offset, "why": "decided and dead-lettered"})
        if (record.partition, record.offset) not in decisions_at and (record.partition, record.offset) not in dead:
            try:
                data = decimals.loads(record.value)
                signal_id, owner = data.get("signal_id"), data.get("portfolio_id")
            except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
                signal_id = owner = None
            if portfolio is None or owner == portfolio:
                report.signals_without_decision.append(
                    {"signal_id": signal_id, "partition": record.partition, "offset": record.offset})
    # A fill, command or instrument leaves no record of its own when applied: each must be
    # dead-lettered or else admitted by the worker's rule (a state change).
    for role in ("fills", "controls", "instruments"):
        for record in history[role]:
            if (record.topic, record.partition, record.offset) not in dead_letters \
                    and not _admitted_input(role, record):
                report.inputs_unaccounted.append({"topic": record.topic, "partition": record.partition,
                                                  "offset": record.offset, "why": "neither admitted nor dead-lettered"})
    for order_id, orders in orders_by_id.items():
        if len(orders) > 1:
            report.duplicate_orders.append({"order_id": order_id, "count": len(orders)})

    accepted_ids: set[str] = set()
    steps = recorded_interleaving(history["signals"], history["fills"], decisions, dead_letters, history["controls"])
    for done, result in enumerate(rederive(steps, instruments, resolver), start=1):
        if progress:
            progress.tick(done)
        recorded = result.step.recorded or {}
        if recorded.get("order_id"):
            accepted_ids.add(recorded["order_id"])
        if not in_scope(recorded, portfolio, start, end):
            continue
        if result.decision is None:
            report.unverifiable.append({"signal_id": recorded.get("signal_id"),
                                        "partition": result.step.record.partition,
                                        "offset": result.step.record.offset, "why": result.unverifiable})
            continue
        if not result.exact_instrument:
            report.instrument_versions_missing += 1
        derived_json = to_json(result.decision)
        raw = result.step.decision_record.value.decode() if result.step.decision_record else None
        where = {"signal_id": recorded.get("signal_id"), "partition": result.step.record.partition,
                 "offset": result.step.record.offset}
        problems = []
        if raw != derived_json:
            problems += [{**where, "field": path, "recorded": a, "rederived": b}
                         for path, a, b in differences(recorded, decimals.loads_output(derived_json))]
        if result.decision.outcome == "accepted":
            recorded_orders = orders_by_id.get(result.decision.order_id, [])
            if not recorded_orders:
                report.decisions_without_order.append({**where, "order_id": result.decision.order_id})
            elif result.order is not None:
                derived_order = to_json(result.order)
                for order_record, order in recorded_orders:
                    if order_record.value.decode() != derived_order:
                        problems += [{**where, "field": f"order.{path}", "recorded": a, "rederived": b}
                                     for path, a, b in differences(order, decimals.loads_output(derived_order))]
        if problems:
            report.mismatches.extend(problems)
        else:
            report.verified += 1
    for order_id, orders in orders_by_id.items():
        if order_id not in accepted_ids and (portfolio is None or orders[0][1]["portfolio_id"] == portfolio):
            report.orders_without_decision.append({"order_id": order_id, "signal_id": orders[0][1]["signal_id"]})
    report.unresolvable_config_hashes = sorted(resolver.unresolvable)
    if progress:
        progress.close()
    return report


def _admitted_input(role: str, record: Record) -> bool:
    """Whether the worker admits the record (a state change), by its own rule; the
    time check aside (its answer depends on the configuration: the dead-letter
    topic gives it)."""
    from streams.wire.instruments import admit_instrument

    if role == "instruments":
        try:
            admit_instrument(record.key, record.value, record.timestamp)
        except InvalidMessage:
            return False
        return True
    return admitted(role, record) is not None


def _name(history: dict[str, list[Record]], role: str) -> str | None:
    records = history.get(role) or []
    return records[0].topic if records else None


def parse_time(text: str | None) -> int | None:
    """--from/--to: RFC 3339 or epoch milliseconds."""
    if text is None:
        return None
    return parse_event_time(int(text) if text.isdigit() else text)
