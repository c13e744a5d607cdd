"""Every Prometheus metric of the sizer, declared once against an injected registry.

Per-portfolio series are bounded: at most `portfolio_limit` portfolios carry
series at a time, the most recently active ones; the least recently active is
dropped (its series removed) when a new one arrives, and the drop is counted.
Their figures are computed when Prometheus scrapes (`PortfolioSeries`, a custom
collector), not at every batch: a worker that touches a new portfolio with
nearly every input (100,000 portfolios) would otherwise spend a third of its
batch time making and removing gauge children.
Series are only for what the worker owns: when partitions move (`retain`), the
lag of every input partition it no longer holds and the figures of every
portfolio on them are removed, so that no two workers export one portfolio.
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from typing import Any, Callable, Iterable, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streams.wire.roles import INPUTS, message_types
from streams.config import SizingConfig
from streams.engine import REJECTION_REASONS, ControlOutcome, FillOutcome, PortfolioState
from streams.engine.state import drawdown_shown
from streams.errors import INPUT_ERROR_CODES
from streams.wire.models import Decision

NOTIONAL_BUCKETS = (10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

PORTFOLIO_GAUGES = {
    "exposure": ("sizer_portfolio_exposure_usd", "Open positions plus reservations, USD, on the configured basis"),
    "reserved": ("sizer_portfolio_reserved_usd", "Notional reserved for orders neither filled nor canceled, USD"),
    "cap": ("sizer_portfolio_cap_usd", "The portfolio exposure cap now, USD (a percentage cap follows equity)"),
    "utilisation": ("sizer_portfolio_cap_utilisation_ratio", "Exposure divided by the cap (1 = at the cap)"),
    "wins": ("sizer_portfolio_consecutive_wins", "Consecutive winning closes"),
    "losses": ("sizer_portfolio_consecutive_losses", "Consecutive losing closes"),
    "drawdown": ("sizer_portfolio_drawdown_mode", "1 while the portfolio is in drawdown mode"),
    "phase": ("sizer_portfolio_phase", "Graduated phase (1, 2, 3)"),
    "equity": ("sizer_portfolio_equity_usd", "Starting equity plus realized PnL and equity adjustments, USD"),
    "peak": ("sizer_portfolio_peak_equity_usd", "The peak the kill switch measures the drawdown from, USD (scaled "
                                                "by deposits and withdrawals)"),
    "drawdown_pct": ("sizer_portfolio_drawdown_pct", "How far equity is below its peak, percent (0 without a "
                                                     "positive peak)"),
    "cooldown": ("sizer_portfolio_symbols_in_cooldown",
                 "Symbols whose opens are in cooldown after a losing close, at the portfolio clock"),
    "paused": ("sizer_portfolio_loss_guard_paused", "1 while the loss guard pauses every open, at the portfolio clock"),
}
# Worker-wide: how many of the tracked portfolios are in each state now.
PROTECTION_TOTALS = {
    "cooldown": ("sizer_portfolios_in_cooldown", "Portfolios of this worker with at least one symbol in cooldown"),
    "paused": ("sizer_portfolios_loss_guard_paused", "Portfolios of this worker whose opens the loss guard pauses"),
}


def portfolio_figures(state: PortfolioState, config: SizingConfig) -> dict[str, Decimal | int]:
    """One portfolio's figures, keyed as PORTFOLIO_GAUGES (USD, counts, 0/1)."""
    reserved = state.reserved()
    exposure = state.position_value(config) + reserved
    cap = config.portfolio_cap.amount(state.streak.equity)
    streak = state.streak
    clock = state.exposure.latest_ts
    cooldown = config.cooldown_ms
    in_cooldown = 0 if cooldown is None or clock is None else sum(
        1 for lost in streak.last_loss.values() if clock < lost + cooldown)
    paused = int(config.loss_guard_ms is not None and streak.paused_until is not None and clock is not None
                 and clock < streak.paused_until)
    return {
        "exposure": exposure, "reserved": reserved, "cap": cap,
        "utilisation": exposure / cap if cap > 0 else Decimal(1),
        "wins": streak.consecutive_wins, "losses": streak.consecutive_losses,
        "drawdown": int(streak.drawdown), "phase": streak.phase, "equity": streak.equity,
        "cooldown": in_cooldown, "paused": paused,
        "peak": streak.peak, "drawdown_pct": drawdown_shown(streak) or Decimal(0),
    }


class PortfolioSeries(Collector):
    """The `sizer_portfolio_*` gauges (PORTFOLIO_GAUGES) of at most `limit` portfolios,
    the most recently active, each labelled `portfolio`. `track` keeps the portfolio's
    latest state (an immutable value) and returns the portfolio it dropped, if any;
    the figures are computed from the kept states at each scrape (prometheus_client's
    custom collector, on the event loop that serves /metrics)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._latest: OrderedDict[str, tuple[PortfolioState, SizingConfig]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._latest)

    def __iter__(self) -> Any:
        return iter(list(self._latest))

    def track(self, portfolio_id: str, state: PortfolioState, config: SizingConfig) -> str | None:
        latest = self._latest
        dropped = None
        if portfolio_id in latest:
            latest.move_to_end(portfolio_id)
        elif len(latest) >= self.limit:
            dropped = latest.popitem(last=False)[0]
        latest[portfolio_id] = (state, config.for_portfolio(portfolio_id))
        return dropped

    def discard(self, portfolio_id: str) -> None:
        self._latest.pop(portfolio_id, None)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(name, text, labels=["portfolio"]) for name, text in PORTFOLIO_GAUGES.values()] + [
            GaugeMetricFamily(name, text) for name, text in PROTECTION_TOTALS.values()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = {key: GaugeMetricFamily(name, text, labels=["portfolio"])
                    for key, (name, text) in PORTFOLIO_GAUGES.items()}
        totals = dict.fromkeys(PROTECTION_TOTALS, 0)
        for portfolio_id, (state, config) in list(self._latest.items()):
            for key, value in portfolio_figures(state, config).items():
                families[key].add_metric([portfolio_id], float(value))
                if key in totals and value:
                    totals[key] += 1
        return [*families.values(), *(GaugeMetricFamily(name, text, value=totals[key])
                                      for key, (name, text) in PROTECTION_TOTALS.items())]


def process_collectors(registry: CollectorRegistry) -> None:
    """`process_*` (CPU, memory, open files, start time), `python_info` and
    `python_gc_*` on `registry`, as on prometheus_client's default registry."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class SizerMetrics:
    def __init__(self, registry: CollectorRegistry, portfolio_limit: int = 1000) -> None:
        self.registry = registry
        self.portfolio_limit = portfolio_limit
        self._halted: dict[str, tuple[str, str]] = {}  # portfolio -> its halted series' labels
        self._declare_outcomes(registry)
        self._declare_processing(registry)
        self._tracked = PortfolioSeries(portfolio_limit)
        registry.register(self._tracked)
        self._partition_of: dict[str, int] = {}  # portfolio -> the input partition it lives on
        self._lagging: set[tuple[str, str]] = set()  # (topic role, partition) carrying a lag series
        self._zero_known_series()

    def _declare_outcomes(self, registry: CollectorRegistry) -> None:
        """What the worker decided and did: decisions, dead letters, fills, commands, halts."""
        self.build_info = Info("sizer_build", "The worker's version, configuration hash and processing guarantee",
                               registry=registry)
        self.decisions = Counter("sizer_decisions", "Decisions by outcome and reason",
                                 ["outcome", "reason"], registry=registry)
        self.accepted_notional = Histogram("sizer_accepted_notional_usd", "Notional of accepted orders, USD",
                                           buckets=NOTIONAL_BUCKETS, registry=registry)
        self.decision_latency = Histogram(
            "sizer_decision_latency_seconds", "From the signal's event time to its order's send (wall clock)",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.dead_letters = Counter("sizer_dead_letters", "Inputs sent to the dead-letter topic",
                                    ["topic", "reason"], registry=registry)
        self.dead_letter_failures = Counter(
            "sizer_dead_letter_failures", "Dead letters the producer refused, sent again as a summary without "
            "the original bytes", ["topic"], registry=registry)
        self.instruments_restore_failures = Counter(
            "sizer_instrument_restore_failures", "Valid instrument records that could not be re-published after an "
            "invalid update (the log names the symbol; compaction may then keep only the invalid one)",
            registry=registry)
        self.instruments_restored = Counter(
            "sizer_instruments_restored", "Valid instrument records re-published after an invalid update of "
            "their symbol, so that compaction keeps a valid version", registry=registry)
        self.fills = Counter("sizer_fill_events", "Fill events by type and what they did: applied, duplicate "
                             "(nothing changed), overfill (a leg filled beyond its order), unknown_order (no open "
                             "reservation: a fill applied in full, a cancel that changed nothing)",
                             ["type", "outcome"], registry=registry)
        self.commands = Counter("sizer_control_commands", "Operator commands by type and what they did: applied, "
                                "duplicate, no_effect (a release of no open order, a halt of a halted portfolio, "
                                "a resume of a running one)", ["type", "outcome"], registry=registry)
        self.halted = Gauge("sizer_portfolio_halted", "1 while an operator's halt is in force (reason HALTED: every "
                            "signal rejected; REDUCE_ONLY: opens rejected); the drawdown latch is "
                            "sizer_portfolio_max_drawdown_latched", ["portfolio", "reason", "operator"],
                            registry=registry)
        self.portfolios_halted = Gauge("sizer_portfolios_halted", "Portfolios of this worker under an operator's halt",
                                       registry=registry)
        self._halted: dict[str, tuple[str, str]] = {}  # portfolio -> its halted series' labels
        self.latched = Gauge("sizer_portfolio_max_drawdown_latched", "1 while the drawdown latch is set "
                             "(MAX_DRAWDOWN: every signal rejected until a resume that clears max_drawdown), "
                             "whatever an operator's halt", ["portfolio"], registry=registry)
        self.portfolios_latched = Gauge("sizer_portfolios_max_drawdown_latched",
                                        "Portfolios of this worker whose drawdown latch is set", registry=registry)
        self._latched: set[str] = set()
        self.lapsed = Counter("sizer_reservations_lapsed", "Reservations lapsed by reservation_ttl_s on the "
                              "portfolio clock (each named in the trace of the decision that lapsed it)",
                              registry=registry)

    def _declare_processing(self, registry: CollectorRegistry) -> None:
        """How the worker processes: lag, batches, collections, commits, redeliveries, series kept."""
        self.consumer_lag = Gauge("sizer_consumer_lag_messages", "High watermark minus the next offset to process",
                                  ["topic", "partition"], registry=registry)
        self.batch_size = Histogram("sizer_batch_inputs", "Inputs handled per batch (one lock, one flush)",
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=registry)
        # with the commit time, what an order's latency is made of once its signal is fetched
        self.batch_seconds = Histogram(
            "sizer_batch_seconds", "Wall time to handle one batch: decide, write state, send and wait for every "
            "acknowledgement", buckets=LATENCY_BUCKETS, registry=registry)
        self.gc_pause_seconds = Histogram(
            "sizer_gc_pause_seconds", "Wall time of each garbage collection of the worker's process, by generation "
            "(the event loop stands still meanwhile)", ["generation"], buckets=LATENCY_BUCKETS, registry=registry)
        self.commit_seconds = Histogram(
            "sizer_commit_seconds", "Wall time of one commit of the input positions (exactly-once: sending the "
            "offsets and ending every open transaction, after which the orders are readable)",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.redelivered = Counter("sizer_inputs_redelivered", "Inputs delivered again after processing; skipped",
                                   ["topic"], registry=registry)
        self.recovered = Counter("sizer_inputs_recovered", "Inputs faust skipped, read back and processed in order",
                                 ["topic"], registry=registry)
        self.reseeks = Counter("sizer_partition_reseeks", "Partitions sought back to their position after a stall",
                               ["topic"], registry=registry)
        self.broker_unavailable = Gauge(
            "sizer_broker_unavailable", "1 while the worker's Kafka clients fail against this broker (or the group "
            "coordinator, the transaction coordinator, metadata, produce: what aiokafka names), 0 once nothing "
            "failed for 15 s; one WARNING line per outage (streams.kafka.outages)", ["broker"], registry=registry)
        self.portfolios_tracked = Gauge("sizer_portfolio_series", "Portfolios that currently carry series",
                                        registry=registry)
        self.portfolios_dropped = Counter("sizer_portfolio_series_dropped",
                                          "Portfolios whose series were dropped to respect the limit",
                                          registry=registry)

    def _zero_known_series(self) -> None:
        # Every known label set starts at zero: a counter series that first appears at 1
        # has no earlier sample, and increase() (so every alert on it) would miss it.
        # (outcome, reason) -> its series, looked up once (per decision, labels() costs
        # more than the increment)
        self._decided = {("accepted", ""): self.decisions.labels("accepted", "")}
        for reason in REJECTION_REASONS:
            self._decided[("rejected", reason)] = self.decisions.labels("rejected", reason)
        for command_type in message_types("controls"):
            for outcome in get_args(ControlOutcome):
                self.commands.labels(command_type, outcome)
        for fill_type in message_types("fills"):
            for outcome in get_args(FillOutcome):
                self.fills.labels(fill_type, outcome)
        for role in INPUTS:
            self.redelivered.labels(role)
            self.recovered.labels(role)
            self.reseeks.labels(role)
            self.dead_letter_failures.labels(role)
            for code in INPUT_ERROR_CODES:
                self.dead_letters.labels(role, code)

    def time_collections(self) -> Callable[[str, dict[str, Any]], None]:
        """Time every garbage collection from now on into `sizer_gc_pause_seconds`
        (a `gc.callbacks` entry, returned so that it can be removed)."""
        import gc
        import time

        series = {generation: self.gc_pause_seconds.labels(str(generation)) for generation in range(3)}
        clock = time.perf_counter
        started = [0.0]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = clock()
            else:
                series[info["generation"]].observe(clock() - started[0])

        gc.callbacks.append(callback)
        return callback

    def decided(self, decision: Decision, latency_s: float | None) -> None:
        labels = (decision.outcome, decision.reason or "")
        series = self._decided.get(labels)
        if series is None:
            series = self._decided[labels] = self.decisions.labels(*labels)
        series.inc()
        lapsed = decision.trace.get("lapsed")
        if lapsed:
            self.lapsed.inc(len(lapsed))
        if decision.outcome == "accepted":
            self.accepted_notional.observe(float(decision.notional))
            if latency_s is not None:
                self.decision_latency.observe(max(latency_s, 0.0))

    def command_applied(self, command_type: str, outcome: str) -> None:
        self.commands.labels(command_type, outcome).inc()

    def _halt(self, portfolio_id: str, state: PortfolioState) -> None:
        controls = state.controls
        latched = controls.max_drawdown is not None
        if latched != (portfolio_id in self._latched):
            if latched:
                self._latched.add(portfolio_id)
                self.latched.labels(portfolio_id).set(1)
            else:
                self._latched.discard(portfolio_id)
                self.latched.remove(portfolio_id)
            self.portfolios_latched.set(len(self._latched))
        halt = controls.halt
        labels = (halt.reason, halt.operator) if halt is not None else None
        if self._halted.get(portfolio_id) == labels:
            return
        old = self._halted.pop(portfolio_id, None)
        if old is not None:
            self.halted.remove(portfolio_id, *old)
        if labels is not None:
            self._halted[portfolio_id] = labels
            self.halted.labels(portfolio_id, *labels).set(1)
        self.portfolios_halted.set(len(self._halted))

    def fill_applied(self, fill_type: str, outcome: str) -> None:
        self.fills.labels(fill_type, outcome).inc()

    def dead_lettered(self, topic_role: str, reason: str) -> None:
        self.dead_letters.labels(topic_role, reason).inc()

    def built(self, version: str, config_hash: str, processing_guarantee: str) -> None:
        """`sizer_build_info{version, config_hash, processing_guarantee} 1`."""
        self.build_info.info({"version": version, "config_hash": config_hash,
                              "processing_guarantee": processing_guarantee})

    def portfolio_state(self, portfolio_id: str, state: PortfolioState, config: SizingConfig,
                        partition: int | None = None) -> None:
        """Keep one portfolio's state for its series (figures computed at the next
        scrape), within the series limit. `partition`: the input partition the
        portfolio lives on (its series go when that partition does)."""
        self._halt(portfolio_id, state)
        if partition is not None:
            self._partition_of[portfolio_id] = partition
        dropped = self._tracked.track(portfolio_id, state, config)
        if dropped is not None:
            self.portfolios_dropped.inc()
            if dropped not in self._halted and dropped not in self._latched:
                self._partition_of.pop(dropped, None)
        else:
            self.portfolios_tracked.set(len(self._tracked))

    def lag(self, readings: Iterable[tuple[str, int, int]]) -> None:
        """(topic role, partition, lag) readings for the input partitions this worker owns."""
        for role, partition, lag in readings:
            self.consumer_lag.labels(role, str(partition)).set(lag)
            self._lagging.add((role, str(partition)))

    def retain(self, partitions: Iterable[int]) -> tuple[int, int]:
        """Keep only the series of what this worker owns after partitions moved: the
        input partitions `partitions` (signals, fills and controls are co-partitioned)
        and the portfolios on them. Returns (lag series, portfolios) removed."""
        owned = {str(partition) for partition in partitions}
        lag_gone = [labels for labels in self._lagging if labels[1] not in owned]
        for labels in lag_gone:
            self._lagging.discard(labels)
            try:
                self.consumer_lag.remove(*labels)
            except KeyError:
                pass
        gone = [p for p in {*self._tracked, *self._halted, *self._latched}
                if str(self._partition_of.get(p)) not in owned]
        for portfolio_id in gone:
            self._tracked.discard(portfolio_id)
            self._partition_of.pop(portfolio_id, None)
            halted = self._halted.pop(portfolio_id, None)
            if halted is not None:
                self.halted.remove(portfolio_id, *halted)
            if portfolio_id in self._latched:
                self._latched.discard(portfolio_id)
                self.latched.remove(portfolio_id)
        self.portfolios_halted.set(len(self._halted))
        self.portfolios_latched.set(len(self._latched))
        self.portfolios_tracked.set(len(self._tracked))
        return len(lag_gone), len(gone)
