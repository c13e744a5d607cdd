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
from typing import TYPE_CHECKING, Any, Iterator

from streams.wire import decimals
from streams.wire.framing import framed_id, payload, subject
from streams.config import SizingConfig
from streams.errors import InvalidMessage
from streams.history.interleaving import Instruments, Rederived, Source, admitted, dead_lettered, recorded_interleaving, \
    rederive
from streams.kafka.io import Record, published_configs, read_topic, together
from streams.kafka.settings import ClientConfig
from streams.wire.models import parse_event_time, to_json
from streams.history.progress import Progress
from streams.kafka.topics import TopicSet
from streams.wire.roles import ROLES
from streams.text import counted
from streams.wire.admission import PORTFOLIO_KEYED, home_partition

if TYPE_CHECKING:
    from streams.kafka.schema_registry import SchemaRegistry


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
    # input records on another partition than their key's, used by a worker anyway
    wrong_partition_admitted: list[dict[str, Any]] = field(default_factory=list)
    # input records on another partition than their key's, dead-lettered as they must be (not a failure)
    wrong_partition_refused: list[dict[str, Any]] = field(default_factory=list)
    # outputs framed with a schema id the registry does not hold under their topic's subject
    schema_id_mismatches: list[dict[str, Any]] = field(default_factory=list)
    instrument_versions_missing: int = 0
    seconds: float = 0.0  # wall time of the whole audit, reading the topics included (set by the caller)

    PROBLEMS = ("mismatches", "signals_without_decision", "decisions_without_order", "orders_without_decision",
                "duplicate_decisions", "duplicate_orders", "unresolvable_config_hashes",
                "decisions_for_unknown_signals", "unverifiable", "inputs_unaccounted", "wrong_partition_admitted",
                "schema_id_mismatches")

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.PROBLEMS)

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in ("events", "verified", *self.PROBLEMS,
                                                        "wrong_partition_refused", "instrument_versions_missing",
                                                        "seconds")}
        return {"ok": self.ok, **data}

    def summary(self) -> str:
        lines = [f"audit: {counted(self.verified, 'decision')} verified, {counted(self.events, 'event')} read, "
                 f"audit took {self.seconds:.1f} s"]
        if self.wrong_partition_refused:
            lines.append(f"  note: {counted(len(self.wrong_partition_refused), 'input record')} sent to another "
                         "partition than its key's, dead-lettered WRONG_PARTITION (a producer's partitioner is not "
                         "murmur2):")
            lines += [f"    {_line(item)}" for item in self.wrong_partition_refused[:20]]
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


class ConfigResolver:
    """config_hash -> SizingConfig, from the records of the configuration topic."""

    def __init__(self, records: list[Record]) -> None:
        self._configs: dict[str, SizingConfig] = {config.config_hash: config
                                                  for _, config in published_configs(records)}
        self.unresolvable: set[str] = set()
        # configurations with `[portfolios."ID"]` tables: a portfolio's own effective
        # configuration is derived from them when no record holds it by its hash
        self._with_tables = [c for c in self._configs.values() if c.portfolios]

    def __call__(self, config_hash: str, portfolio_id: str | None = None) -> SizingConfig | None:
        config = self._configs.get(config_hash)
        if config is None and portfolio_id is not None:
            for tables in self._with_tables:
                derived = tables.for_portfolio(portfolio_id)
                if derived.config_hash == config_hash:
                    config = self._configs[config_hash] = derived
                    break
        if config is None:
            self.unresolvable.add(config_hash)
        return config


OUTPUTS = ("decisions", "orders")


async def output_schema_subjects(history: dict[str, list[Record]], registry: "SchemaRegistry"
                                 ) -> dict[int, frozenset[str]]:
    """The subjects each schema id framing an order or a decision is registered under,
    asked of the registry once per id (read only: the audit registers nothing). Raises
    RegistryUnavailable when it cannot be asked."""
    ids = sorted({schema_id for role in OUTPUTS for record in history[role]
                  if (schema_id := framed_id(record.value)) is not None})
    at_once = asyncio.Semaphore(8)  # a history framed under many ids asks a few at a time

    async def one(schema_id: int) -> frozenset[str]:
        async with at_once:
            return await registry.subjects_of(schema_id)

    answers = await asyncio.gather(*(one(schema_id) for schema_id in ids))
    return dict(zip(ids, answers))


def check_schema_ids(history: dict[str, list[Record]], subjects: dict[int, frozenset[str]],
                     report: AuditReport) -> None:
    """Every framed order and decision carries a schema id registered under its topic's
    subject (`subjects`: `output_schema_subjects`); plain ones, written without a
    registry, are not checked."""
    for role in OUTPUTS:
        for record in history[role]:
            schema_id = framed_id(record.value)
            if schema_id is None or subject(record.topic) in subjects.get(schema_id, frozenset()):
                continue
            try:
                data = record.json()
            except (ValueError, UnicodeDecodeError):
                data = None
            named = {key: data[key] for key in ("signal_id", "order_id") if isinstance(data, dict) and key in data}
            report.schema_id_mismatches.append({
                "topic": record.topic, "partition": record.partition, "offset": record.offset, **named,
                "schema_id": schema_id, "subject": subject(record.topic),
                "registered_under": ",".join(sorted(subjects.get(schema_id, frozenset()))) or "nothing"})


async def read_history(client: ClientConfig, topics: TopicSet, progress: "Progress | None" = None) -> dict[str, list[Record]]:
    """Every record of every topic the audit needs, read concurrently."""
    async def one(role: str) -> tuple[str, list[Record]]:
        spec = topics[role]
        records = await read_topic(client, spec.name, spec.partitions, timeout_s=600)
        if progress:
            progress.note(f"read {len(records)} {role}")
        return role, records

    # every read ends before a refusal is raised: none is left to end, and be
    # logged, while asyncio.run shuts down
    return dict(await together(*(one(role) for role in ROLES)))


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


@dataclass
class Recorded:
    """What the worker recorded, indexed once for every check: its decisions (decoded;
    a record that is no decision of the worker's, a tombstone, is left out), by the
    position of the signal they decide; its orders by order id; its dead letters, and
    the signal positions among them."""

    decisions: list[tuple[Record, dict[str, Any]]]
    decisions_at: dict[tuple[int, int], list[dict[str, Any]]]
    orders_by_id: dict[str, list[tuple[Record, dict[str, Any]]]]
    dead_letters: dict[Source, str]
    dead_signals: set[tuple[int, int]]

    @classmethod
    def read(cls, history: dict[str, list[Record]]) -> "Recorded":
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
        return cls(decisions, decisions_at, orders_by_id, dead_letters, dead)


def audit(history: dict[str, list[Record]], portfolio: str | None = None, start: int | None = None,
          end: int | None = None, progress: "Progress | None" = None, partitions: int | None = None,
          schema_subjects: dict[int, frozenset[str]] | None = None) -> AuditReport:
    """Verify every decision in scope; state is always rebuilt from the beginning.
    Each check is its own function below, run in this order (the report's lists
    keep the order their entries were found in). `partitions`: the input topics'
    partition count, by which every input record's partition is checked against
    its key's (None: not checked). `schema_subjects`: the subjects of the schema
    ids framing the outputs (`output_schema_subjects`; None, no registry: not
    checked)."""
    report = AuditReport(events=sum(len(records) for records in history.values()))
    resolver = ConfigResolver(history["config"])
    recorded = Recorded.read(history)
    check_decided_signals(history["signals"], recorded, report)
    check_signals_decided(history["signals"], recorded, portfolio, report)
    check_inputs_accounted(history, recorded, report)
    if partitions is not None:
        check_partitions(history, partitions, recorded, portfolio, report)
    check_duplicate_orders(recorded, report)
    if schema_subjects is not None:
        check_schema_ids(history, schema_subjects, report)
    accepted_ids = check_rederived(history, recorded, resolver, (portfolio, start, end), progress, report)
    check_orders_decided(recorded, accepted_ids, portfolio, report)
    report.unresolvable_config_hashes = sorted(resolver.unresolvable)
    if progress:
        progress.close()
    return report


def check_decided_signals(signals: list[Record], recorded: Recorded, report: AuditReport) -> None:
    """Every decision names a signal that is there, and no signal has two decisions."""
    signal_positions = {(r.partition, r.offset) for r in signals}
    for (partition, offset), recorded_there in recorded.decisions_at.items():
        if (partition, offset) not in signal_positions:
            report.decisions_for_unknown_signals.append(
                {"signal_id": recorded_there[0]["signal_id"], "partition": partition, "offset": offset})
        if len(recorded_there) > 1:
            report.duplicate_decisions.append({"signal_id": recorded_there[0]["signal_id"], "partition": partition,
                                               "offset": offset, "count": len(recorded_there)})


def check_signals_decided(signals: list[Record], recorded: Recorded, portfolio: str | None,
                          report: AuditReport) -> None:
    """Every signal has one outcome: a decision or a dead letter, never both, never none."""
    decisions_at, dead = recorded.decisions_at, recorded.dead_signals
    for record in signals:
        if (record.partition, record.offset) in decisions_at and (record.partition, record.offset) in dead:
            report.inputs_unaccounted.append({"topic": record.topic, "partition": record.partition,
                                              "offset": record.offset, "why": "decided and dead-lettered"})
        if (record.partition, record.offset) not in decisions_at and (record.partition, record.offset) not in dead:
            try:
                data = decimals.loads(payload(record.value))
                signal_id, owner = data.get("signal_id"), data.get("portfolio_id")
            except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
                signal_id = owner = None
            if portfolio is None or owner == portfolio:
                report.signals_without_decision.append(
                    {"signal_id": signal_id, "partition": record.partition, "offset": record.offset})


def check_inputs_accounted(history: dict[str, list[Record]], recorded: Recorded, report: AuditReport) -> None:
    """A fill, command or instrument leaves no record of its own when applied: each must
    be dead-lettered or else admitted by the worker's rule (a state change)."""
    for role in ("fills", "controls", "instruments"):
        for record in history[role]:
            if (record.topic, record.partition, record.offset) not in recorded.dead_letters \
                    and not _admitted_input(role, record):
                report.inputs_unaccounted.append({"topic": record.topic, "partition": record.partition,
                                                  "offset": record.offset, "why": "neither admitted nor dead-lettered"})


def check_duplicate_orders(recorded: Recorded, report: AuditReport) -> None:
    """No order id was written twice."""
    for order_id, orders in recorded.orders_by_id.items():
        if len(orders) > 1:
            report.duplicate_orders.append({"order_id": order_id, "count": len(orders)})


def check_rederived(history: dict[str, list[Record]], recorded: Recorded, resolver: "ConfigResolver",
                    scope: tuple[str | None, int | None, int | None], progress: "Progress | None",
                    report: AuditReport) -> set[str]:
    """Every decision in `scope` (portfolio, from, to) re-derived in the recorded
    interleaving equals the recorded one, and so does its order. Returns the order
    ids of every accepted decision, in scope or not."""
    accepted_ids: set[str] = set()
    steps = recorded_interleaving(history["signals"], history["fills"], recorded.decisions, recorded.dead_letters,
                                  history["controls"])
    for done, result in enumerate(rederive(steps, Instruments(history["instruments"]), resolver), start=1):
        if progress:
            progress.tick(done)
        decision = result.step.recorded or {}
        if decision.get("order_id"):
            accepted_ids.add(decision["order_id"])
        if not in_scope(decision, *scope):
            continue
        if result.decision is None:
            report.unverifiable.append({"signal_id": decision.get("signal_id"),
                                        "partition": result.step.record.partition,
                                        "offset": result.step.record.offset, "why": result.unverifiable})
            continue
        if not result.exact_instrument:
            report.instrument_versions_missing += 1
        problems = _rederived_differences(result, decision, recorded, report)
        if problems:
            report.mismatches.extend(problems)
        else:
            report.verified += 1
    return accepted_ids


def _rederived_differences(result: Rederived, decision: dict[str, Any], recorded: Recorded,
                           report: AuditReport) -> list[dict[str, Any]]:
    """Each field where the re-derived decision, or its order, differs from the recorded
    one; an accepted decision with no recorded order is reported as such."""
    derived_json = to_json(result.decision)
    raw = payload(result.step.decision_record.value).decode() if result.step.decision_record else None
    where = {"signal_id": decision.get("signal_id"), "partition": result.step.record.partition,
             "offset": result.step.record.offset}
    problems = []
    if raw != derived_json:
        problems += [{**where, "field": path, "recorded": a, "rederived": b}
                     for path, a, b in differences(decision, decimals.loads_output(derived_json))]
    if result.decision.outcome == "accepted":
        recorded_orders = recorded.orders_by_id.get(result.decision.order_id, [])
        if not recorded_orders:
            report.decisions_without_order.append({**where, "order_id": result.decision.order_id})
        elif result.order is not None:
            derived_order = to_json(result.order)
            for order_record, order in recorded_orders:
                if payload(order_record.value).decode() != derived_order:
                    problems += [{**where, "field": f"order.{path}", "recorded": a, "rederived": b}
                                 for path, a, b in differences(order, decimals.loads_output(derived_order))]
    return problems


def check_orders_decided(recorded: Recorded, accepted_ids: set[str], portfolio: str | None,
                         report: AuditReport) -> None:
    """Every order (of the portfolio in scope) belongs to an accepted decision."""
    for order_id, orders in recorded.orders_by_id.items():
        if order_id not in accepted_ids and (portfolio is None or orders[0][1]["portfolio_id"] == portfolio):
            report.orders_without_decision.append({"order_id": order_id, "signal_id": orders[0][1]["signal_id"]})


def check_partitions(history: dict[str, list[Record]], partitions: int, recorded: Recorded, portfolio: str | None,
                     report: AuditReport) -> None:
    """Every signal, fill and command on another partition than its key's: refused
    (dead-lettered WRONG_PARTITION) as it must be, or else used by a worker, which
    sized it against a second copy of its portfolio."""
    for role in PORTFOLIO_KEYED:
        for record in history[role]:
            if record.key is None or (portfolio is not None and record.key != portfolio.encode()):
                continue
            home = home_partition(record.key, partitions)
            if record.partition == home:
                continue
            where = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                     "portfolio": record.key.decode("utf-8", "replace")[:80], "key_partition": home}
            reason = recorded.dead_letters.get((record.topic, record.partition, record.offset))
            if reason is None:
                report.wrong_partition_admitted.append(where)
            else:
                report.wrong_partition_refused.append({**where, "dead_lettered": reason})


def _admitted_input(role: str, record: Record) -> bool:
    """Whether the worker admits the record (a state change), by its own rule; the
    time check aside (its answer depends on the configuration: the dead-letter
    topic gives it)."""
    from streams.wire.instruments import admit_instrument

    if role == "instruments":
        try:
            admit_instrument(record.key, payload(record.value), record.timestamp)
        except InvalidMessage:
            return False
        return True
    return admitted(role, record) is not None


def _name(history: dict[str, list[Record]], role: str) -> str | None:
    records = history.get(role) or []
    return records[0].topic if records else None

