"""A stateful model-based test of the cap (issue 12) and the kill switch and units
(issue 27): hypothesis drives the engine through `Processor` with adversarial
sequences, and a reference model written from DESIGN.md alone (it calls none of
the engine's helpers) checks it.

The model also keeps equity, the peak (exact fractions: a deposit or withdrawal
scales it by new / old equity), the two latches (the operator's halt, full or
reduce-only, and the drawdown latch evaluated on every close), and contract legs
(linear and inverse) whose fills come in the venue's units. After every step:
the drawdown percentage is unchanged by any `adjust_equity`; a breach is never
lost to a halt or a plain resume; no order while equity <= 0; exposure in quote
notional within every cap; the base quantity equal on all linear legs; and a
trace's size bounded by a constant plus what arrived since the previous decision.

The model keeps its own portfolio clock, orders (per-leg fills, finals,
cancels, lapses), positions and marks. After every accepted decision: positions
plus every order not yet terminal (filled final on every leg, canceled, or
lapsed by a configured TTL) stay within the portfolio cap and the pair cap; the
gates (duplicate, unknown instrument, stale) decide as the model says; no order
id is emitted while an earlier emission of it is still open; and every order
and decision decodes back through the product's own input models (closure).

The protections (DESIGN.md, "Protections") are in the model too: reduce signals
(sized from the held position, opposite side, within the held quantity, never
reserving, their fills never adding to a position), the cooldown after a losing
close, the loss guard's pause, the order rate, and group caps. Checked: no open
is accepted while a protection forbids it (and the reason is that protection's);
every reduce is within the held quantity and on the opposite side; a group's
exposure with reservations stays within its cap; no cap is ever exceeded.
"""

from __future__ import annotations

import itertools
import json
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal as D, localcontext
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from streams.config import load_config
from streams.engine import InputPosition
from streams.wire.models import Control, Decision, Fill, Instrument, Order, Signal, decode, to_json, validate
from streams.processor import MemoryStore, Processor
from tests.builders import T0, instrument, leg

SECOND = 1000
INSTRUMENTS = {
    "X": instrument("X", leg("XUSDT", qty_step="0.01"), group="G")["value"],
    "PAIR": instrument("PAIR", leg("PSPOT", "buy", qty_step="0.001", min_qty="0.001"),
                       {**leg("PPERP", "sell", qty_step="0.002"), "max_notional": "700"})["value"],
    "ONE": instrument("ONE", leg("ONEUSDT", qty_step="1", max_qty="40", min_notional="20"), group="G")["value"],
    # a spot leg hedged by a linear swap of 10 base units a contract (OKX ctVal)
    "LIN": instrument("LIN", leg("LSPOT", "buy", qty_step="0.1"),
                      {**leg("LSWAP", "sell", qty_step="1", min_qty="1"), "kind": "linear",
                       "contract_size": "10"})["value"],
    # a spot leg hedged by an inverse perp of 100 quote units a contract (Binance COIN-M)
    "INV": instrument("INV", leg("ISPOT", "buy", qty_step="0.001"),
                      {**leg("IPERP", "sell", qty_step="1", min_qty="1"), "kind": "inverse",
                       "contract_size": "100"})["value"],
}
# the base step every leg of the symbol shares (an inverse leg's contracts round on their own)
STEP = {"X": D("0.01"), "PAIR": D("0.002"), "ONE": D("1"), "LIN": D("10"), "INV": D("0.001")}
UNITS = {leg["venue_symbol"]: (leg.get("kind", "spot"), D(leg.get("contract_size", "1")), D(leg["qty_step"]))
         for value in INSTRUMENTS.values() for leg in value["legs"]}
SYMBOLS = [*INSTRUMENTS, "GHOST"]  # GHOST is never published
CONFIGS = [
    ("conviction", {}),
    ("conviction", {"exposure_basis": "mark", "portfolio_cap": "3000"}),
    ("conviction", {"signal_dedupe_window": 2, "portfolio_cap": "2500"}),
    ("conviction", {"reservation_ttl_s": "600", "max_signal_age_s": "300"}),
    ("graduated", {}),
    ("graduated", {"exposure_basis": "mark", "reservation_ttl_s": "900", "cap_mode": "shrink",
                   "signal_dedupe_window": 3}),
    ("conviction", {"max_signal_age_s": None, "pair_cap_usd": "400", "portfolio_cap": "1500"}),
    ("conviction", {"max_drawdown_pct": "5", "max_hedge_residual_pct": None}),
    ("graduated", {"max_drawdown_pct": "1", "cap_mode": "shrink", "max_hedge_residual_pct": "20"}),
    ("conviction", {"max_drawdown_pct": "50", "portfolio_cap": "2%", "pair_cap_usd": "2500"}),
]
PROTECTED = [  # drawn three times as often: a protection trips only after its own sequence of inputs
    ("conviction", {"cooldown_after_loss_s": "120", "loss_guard_count": 2, "loss_guard_window_s": "600",
                    "loss_guard_pause_s": "300", "max_orders_per_window": 3, "order_rate_window_s": "60",
                    "group_caps": {"G": "1200"}}),
    ("graduated", {"cooldown_after_loss_s": "1", "max_orders_per_window": 1, "order_rate_window_s": "3600",
                   "group_caps": {"G": "0.4%"}, "cap_mode": "shrink"}),
    ("conviction", {"group_caps": {"G": "700"}, "cap_mode": "skip", "loss_guard_count": 1,
                    "loss_guard_window_s": "1", "loss_guard_pause_s": "30", "exposure_basis": "mark"}),
]
GATES = {"DUPLICATE_SIGNAL", "HALTED", "REDUCE_ONLY", "MAX_DRAWDOWN", "EQUITY_EXHAUSTED", "UNKNOWN_INSTRUMENT",
         "STALE_SIGNAL"}
# a trace holds a bounded record of the decision, plus what arrived since the previous one
TRACE_BOUND = 2_500
PER_COMMAND = 40
PER_LAPSE = 200
EXACT = 100  # digits: the model computes exactly too


class Model:
    """One portfolio as DESIGN.md describes it."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.clock: int | None = None
        self.orders: dict[str, dict[str, Any]] = {}  # open orders by id
        self.ended: dict[str, dict[str, Any]] = {}  # the last 64 orders that ended, oldest first
        self.positions: dict[str, list[D]] = {}  # symbol -> [qty, entry notional]
        self.marks: dict[str, tuple[D, int]] = {}
        self.passed_signals: list[str] = []  # signal ids that passed the gates, oldest first
        self.fill_ids: set[str] = set()
        self.halt: str | None = None  # the operator's: "HALTED" (full) or "REDUCE_ONLY"
        self.command_ids: set[str] = set()
        self.equity = Fraction(config.starting_equity)
        self.peak = self.equity  # exact: the highest equity, scaled by deposits and withdrawals
        self.latched = False  # the drawdown latch
        # the drawdown (a fraction of the peak) when a withdrawal emptied the account:
        # equity back above zero is that far below its peak again (DESIGN.md: a deposit
        # or withdrawal never changes the drawdown percentage)
        self.emptied: Fraction | None = None
        self.near_limit = False  # the latch's last evaluation was within rounding of the limit
        self.sides: dict[str, str] = {}  # symbol -> the side of the order that opened its position
        self.groups: dict[str, str | None] = {}  # symbol -> the group of the order that opened its position
        self.legs: dict[str, dict[str, D]] = {}  # symbol -> each leg's own base quantity, once an order filled it
        self.last_loss: dict[str, int] = {}  # symbol -> event time of its latest losing close
        self.losses: list[int] = []  # losing closes counted by the loss guard
        self.paused_until: int | None = None
        self.opens: list[int] = []  # clock of each accepted open

    def drawdown_pct(self) -> Fraction | None:
        """How far equity is below the peak, in percent (None: no positive peak)."""
        return (self.peak - self.equity) * 100 / self.peak if self.peak > 0 else None

    def close(self, pnl: D) -> None:
        """A close books its PnL, lifts the peak, and evaluates the drawdown latch,
        whatever the operator's halt."""
        self.equity += Fraction(pnl)
        self.peak = max(self.peak, self.equity)
        if self.emptied is not None and self.equity > 0:  # a close is no deposit
            self.peak, self.emptied = self.equity / (1 - self.emptied), None
        limit = self.config.max_drawdown_pct
        if limit is None or self.latched:
            return
        drawdown = self.drawdown_pct()
        if drawdown is None:  # no positive peak: any loss below it trips the switch
            self.latched = self.equity < self.peak
            self.near_limit = False
        else:
            self.latched = drawdown >= Fraction(limit)
            self.near_limit = abs(drawdown - Fraction(limit)) < Fraction(1, 10**80)

    def adjust(self, amount: D) -> None:
        """A deposit or withdrawal: the peak scales by new / old equity. New equity <= 0
        becomes the peak; emptied from above zero, the drawdown is kept and holds again
        once equity is back above zero; from <= 0 (a bust by losses) to > 0 the peak
        stays or rises to the new equity."""
        old, new = self.equity, self.equity + Fraction(amount)
        if new <= 0:
            if old > 0:
                self.emptied = (self.peak - old) / self.peak
            self.peak = new
        elif old <= 0:
            self.peak = max(self.peak, new) if self.emptied is None else new / (1 - self.emptied)
            self.emptied = None
        else:
            self.peak = self.peak * new / old
        self.equity = new

    def forbids(self, symbol: str) -> str | None:
        """The protection that forbids an open of `symbol` at the clock, if any (in
        the order DESIGN.md lists them: loss guard, cooldown, order rate)."""
        c = self.config
        if c.loss_guard_count is not None and self.paused_until is not None and self.clock < self.paused_until:
            return "LOSS_GUARD"
        if c.cooldown_after_loss_s is not None and symbol in self.last_loss and (
                self.clock < self.last_loss[symbol] + c.cooldown_after_loss_s * 1000):
            return "COOLDOWN"
        if c.max_orders_per_window is not None and sum(
                1 for t in self.opens if t > self.clock - c.order_rate_window_s * 1000) >= c.max_orders_per_window:
            return "RATE_LIMITED"
        return None

    def lost(self, symbol: str, ts: int) -> None:
        """A losing close: the symbol's cooldown, and the loss guard's count and pause."""
        c = self.config
        self.last_loss[symbol] = max(ts, self.last_loss.get(symbol, ts))
        if c.loss_guard_count is None:
            return
        window = c.loss_guard_window_s * 1000
        losses = self.losses + [ts]
        # `count` losses, this one among them, less than a window from the first to the last
        if any(start <= ts < start + window and sum(1 for t in losses if start <= t < start + window)
               >= c.loss_guard_count for start in losses):
            until = ts + int((c.loss_guard_pause_s * 1000).to_integral_value(rounding=ROUND_CEILING))
            self.paused_until = until if self.paused_until is None else max(until, self.paused_until)
            self.losses = []
        else:  # only losses less than a window before the latest can count again
            self.losses = [t for t in losses if t > max(losses) - window]

    def group_exposure(self, group: str, symbol: str) -> D:
        """Positions and open reservations of the symbols whose orders were sized in `group`."""
        def member(name: str, named: str | None) -> bool:
            return named == group or name == symbol
        return sum((self.value(name) for name in self.positions if member(name, self.groups.get(name))), D(0)) + sum(
            (self.reserved(o) for o in self.orders.values() if member(o["symbol"], o["group"])), D(0))

    def end(self, order_id: str) -> None:
        """An order ended (filled, canceled, released, lapsed): remembered, no longer reserved."""
        order = self.orders.pop(order_id, None) or self.ended.pop(order_id)
        self.ended[order_id] = order
        while len(self.ended) > 64:
            del self.ended[next(iter(self.ended))]

    def move_clock(self, ts: int) -> None:
        self.clock = ts if self.clock is None else max(self.clock, ts)

    # the gates (DESIGN.md pipeline step 1)
    def gate(self, signal: Signal, order_id: str) -> tuple[set[str], bool]:
        """(the gate reasons the engine may give, whether it must give one)."""
        window = self.config.signal_dedupe_window
        if order_id in self.orders or order_id in self.ended or signal.signal_id in self.passed_signals[-window:]:
            return {"DUPLICATE_SIGNAL"}, True
        forgotten = {"DUPLICATE_SIGNAL"} if signal.signal_id in self.passed_signals else set()
        # the kill switch: the drawdown latch, then the operator's halt, then equity at or below zero
        if self.latched:
            return {"MAX_DRAWDOWN"} | forgotten, True
        # a reduce signal passes a reduce-only halt and equity at or below zero (it only lowers exposure)
        reduce = signal.intent == "reduce"
        if self.halt is not None and not (reduce and self.halt == "REDUCE_ONLY"):
            return {self.halt} | forgotten, True
        if self.equity <= 0 and not reduce:
            return {"EQUITY_EXHAUSTED"} | forgotten, True
        if signal.symbol not in INSTRUMENTS:
            return {"UNKNOWN_INSTRUMENT"}, True
        max_age = self.config.max_signal_age_s
        may_be_duplicate = signal.signal_id in self.passed_signals  # beyond the window: may be forgotten
        if max_age is not None and self.clock is not None and self.clock - signal.ts > max_age * 1000:
            return {"STALE_SIGNAL"} | ({"DUPLICATE_SIGNAL"} if may_be_duplicate else set()), True
        return ({"DUPLICATE_SIGNAL"} if may_be_duplicate else set()), False

    def lapse(self) -> list[str]:
        """Orders whose reservation lapses at the current clock (only with a TTL)."""
        ttl = self.config.reservation_ttl_s
        if ttl is None:
            return []
        gone = [oid for oid, order in self.orders.items() if self.clock - order["made"] >= ttl * 1000]
        for oid in gone:
            self.end(oid)
        return gone

    def mark(self, signal: Signal) -> None:
        held = self.marks.get(signal.symbol)
        if held is None or signal.ts >= held[1]:
            self.marks[signal.symbol] = (signal.price, signal.ts)

    def value(self, symbol: str) -> D:
        qty, entry = self.positions.get(symbol, (D(0), D(0)))
        if self.config.exposure_basis == "mark" and symbol in self.marks:
            return qty * self.marks[symbol][0]
        return entry

    def reserved(self, order: dict[str, Any]) -> D:
        left = order["qty"] - max(order["filled"].values(), default=D(0))
        return left * order["price"] if left > 0 else D(0)

    def exposure(self, symbol: str | None = None) -> D:
        symbols = set(self.positions) | {o["symbol"] for o in self.orders.values()}
        return sum((self.value(s) for s in symbols if symbol in (None, s)), D(0)) + sum(
            (self.reserved(o) for o in self.orders.values() if symbol in (None, o["symbol"])), D(0))

    def add_position(self, symbol: str, qty: D, price: D, side: str | None = None, group: str | None = None) -> None:
        if qty <= 0:
            return
        held = self.positions.setdefault(symbol, [D(0), D(0)])
        held[0] += qty
        held[1] += qty * price
        if self.sides.get(symbol) is None and side is not None:
            self.sides[symbol] = side
        if group is not None:  # the group of the latest order that added to it
            self.groups[symbol] = group

    def drop_position(self, symbol: str) -> None:
        del self.positions[symbol]
        self.legs.pop(symbol, None)
        self.sides.pop(symbol, None)
        self.groups.pop(symbol, None)


class CapMachine(RuleBasedStateMachine):
    @initialize(choice=st.sampled_from(CONFIGS + PROTECTED * 3))
    def start(self, choice):
        preset, overrides = choice
        base = load_config(preset)
        self.config = type(base)(**{**base.effective(), **overrides})
        self.processor = Processor(self.config, MemoryStore(self.config))
        for value in INSTRUMENTS.values():
            self.processor.on_instrument(validate(Instrument, value))
        self.model = Model(self.config)
        self.ids = itertools.count()
        self.sent_signals: list[dict[str, Any]] = []
        self.emitted: list[str] = []
        self.fill_ids: list[str] = []
        self.offset = 0
        self.commands_since: list[int] = []  # offsets of commands applied since the last decision

    def now(self) -> int:
        return self.model.clock if self.model.clock is not None else T0

    @rule(symbol=st.sampled_from(SYMBOLS), score=st.sampled_from([None, "0", "0.3", "0.6", "0.86", "1"]),
          price=st.sampled_from(["0.01", "1", "10", "99.5", "500", "20000"]),
          shift=st.sampled_from([0, 1, -1, 299, -299, -301, 601, 3_600, -86_400, 31_536_000]),
          resend=st.integers(0, 30), side=st.sampled_from(["buy", "sell"]),
          reduce=st.sampled_from([None, None, None, "1", "0.5", "0.013"]))
    def signal(self, symbol, score, price, shift, resend, side, reduce):
        if resend < len(self.sent_signals) and resend % 3 == 0:
            value = {**self.sent_signals[resend], "price": price, "ts": self.now() + shift * SECOND}
        else:
            value = {"signal_id": f"s{next(self.ids)}", "portfolio_id": "p1", "symbol": symbol, "side": side,
                     "score": score, "price": price, "ts": self.now() + shift * SECOND}
            if reduce is not None:
                value.update(intent="reduce", reduce_fraction=reduce)
            self.sent_signals.append(value)
        signal = validate(Signal, value)
        order_id_seen = {o for o in self.emitted}
        with localcontext() as ctx:
            ctx.prec = EXACT
            self.decide(signal, order_id_seen)

    def decide(self, signal: Signal, _emitted: set[str]) -> None:
        model = self.model
        result = self.processor.on_signal(signal, InputPosition("signals", 0, self.offset))
        self.offset += 1
        decision, order = result.decision, result.order
        # closure: what the product emits, it accepts back
        assert decode(Decision, to_json(decision).encode()).signal_id == decision.signal_id
        from streams.engine import order_id_for  # the id rule is the spec's: deterministic per signal
        order_id = order_id_for(signal.portfolio_id, signal.signal_id)

        # every command applied since the previous decision is in this trace, and in no other
        listed = decision.trace["input"]["controls_applied"]
        assert [offset for offset, _ in listed] == self.commands_since, (listed, self.commands_since)
        size = len(to_json(decision))
        bound = TRACE_BOUND + PER_COMMAND * len(self.commands_since) + PER_LAPSE * len(
            decision.trace.get("lapsed", []))
        assert size <= bound, f"a trace of {size} bytes, over {bound}"
        self.commands_since = []
        # the latches as the decision read them
        read_state = decision.trace["state"]
        assert read_state["halt"] == model.halt
        assert (read_state["max_drawdown"] is not None) == model.latched

        allowed, required = model.gate(signal, order_id)
        if decision.reason in GATES:
            assert decision.reason in allowed, (decision.reason, allowed)
            return
        assert not required, f"{sorted(allowed)} expected, got {decision.outcome} {decision.reason}"

        # passed the gates: the clock, the mark and the dedupe window move; lapses happen
        model.move_clock(signal.ts)
        model.mark(signal)
        model.passed_signals.append(signal.signal_id)
        lapsed = model.lapse()
        assert [lapse["order_id"] for lapse in decision.trace.get("lapsed", [])] == lapsed
        # the exposure the engine read is the model's, in both directions
        read = decision.trace["state"]
        reserved = sum((model.reserved(o) for o in model.orders.values()), D(0))
        assert (read["positions"], read["reserved"]) == (model.exposure() - reserved, reserved)
        if signal.intent == "reduce":
            self.check_reduce(signal, decision, order)
            return
        forbidden = model.forbids(signal.symbol)
        if forbidden is not None:
            assert decision.reason == forbidden, f"{forbidden} forbids it; got {decision.outcome} {decision.reason}"
            return
        assert decision.reason not in ("LOSS_GUARD", "COOLDOWN", "RATE_LIMITED"), decision.reason
        if decision.outcome != "accepted":
            return
        assert order is not None and order.order_id == order_id
        assert order_id not in model.orders, "an order id emitted while its earlier order is open"
        assert decode(Order, to_json(order).encode()) == order
        validate(Fill, {"event_id": "closure", "portfolio_id": order.portfolio_id, "ts": to_json(order) and order.ts,
                        "type": "order_filled", "order_id": order.order_id, "symbol": order.symbol,
                        "qty": order.qty, "price": order.price, "final": True})
        assert model.equity > 0, f"an order while equity is {model.equity}"
        legs = tuple(leg["venue_symbol"] for leg in INSTRUMENTS[order.symbol]["legs"])
        assert tuple(leg.venue_symbol for leg in order.legs) == legs and order.base_qty == order.qty
        for leg in order.legs:  # one base quantity, each leg in its venue's units
            kind, size, step = UNITS[leg.venue_symbol]
            assert (leg.kind, leg.contract_size) == (kind, size)
            if kind == "spot":
                assert leg.qty == order.base_qty
            elif kind == "linear":
                assert leg.qty * size == order.base_qty and leg.qty % step == 0
            else:
                exact = Fraction(order.base_qty) * Fraction(order.price) / Fraction(size)
                assert Fraction(leg.qty) == (exact // Fraction(step)) * Fraction(step)
                residual = Fraction(order.notional) - Fraction(leg.qty) * Fraction(size)
                assert residual >= 0
                pct = self.config.max_hedge_residual_pct
                assert pct is None or residual * 100 <= Fraction(pct) * Fraction(order.notional)
        assert order.notional == order.base_qty * order.price  # exposure in quote notional
        group = INSTRUMENTS[order.symbol].get("group")
        model.orders[order_id] = {"symbol": order.symbol, "qty": order.qty, "price": order.price,
                                  "made": model.clock, "legs": legs, "filled": {}, "finals": set(),
                                  "side": order.side, "group": group, "reduce": False}
        model.opens.append(model.clock)
        self.emitted.append(order_id)
        equity = self.processor.store.load("p1").streak.equity
        cap = self.config.portfolio_cap.amount(equity)
        assert model.exposure() <= cap, f"exposure {model.exposure()} over the cap {cap}"
        if self.config.pair_cap is not None:
            assert model.exposure(order.symbol) <= self.config.pair_cap
        if group in self.config.group_caps:
            group_cap = self.config.group_caps[group].amount(equity)
            assert model.group_exposure(group, order.symbol) <= group_cap, "group exposure over its cap"

    def check_reduce(self, signal: Signal, decision: Decision, order: Order | None) -> None:
        """A reduce that passed the gates: sized from the held position, never past it."""
        model = self.model
        held = model.positions.get(signal.symbol)
        held_qty = held[0] if held else D(0)
        position_side = model.sides.get(signal.symbol)
        if held_qty <= 0 or position_side == signal.side:
            assert decision.reason == "NOTHING_TO_REDUCE", (decision.outcome, decision.reason)
            return
        step = STEP[signal.symbol]
        wanted = (held_qty * signal.reduce_fraction // step) * step
        if decision.outcome != "accepted":
            # the exchange's rules only: a minimum (never for a whole exit), a maximum below one step, or dust
            assert decision.reason in ("BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL", "NOTHING_TO_REDUCE"), decision.reason
            assert decision.reason == "NOTHING_TO_REDUCE" or signal.reduce_fraction < 1 or wanted > 0
            return
        assert order is not None and order.side == signal.side and order.side != position_side
        assert D(0) < order.qty <= held_qty, f"reduce of {order.qty} with {held_qty} held"
        # and no leg exits more than it holds (a leg absent was never filled by an order: it holds the position)
        leg_held = model.legs.get(signal.symbol, {})
        every_leg = min(leg_held.get(leg["venue_symbol"], held_qty) for leg in INSTRUMENTS[signal.symbol]["legs"])
        assert order.qty <= every_leg, f"reduce of {order.qty} with {leg_held} held on the legs"
        assert all(leg.qty > 0 for leg in order.legs), f"a one-legged reduce: {order.legs}"
        assert order.qty <= wanted
        legs = tuple(leg["venue_symbol"] for leg in INSTRUMENTS[order.symbol]["legs"])
        # a reduce reserves nothing: it is remembered only so its fills do not add to the position
        model.ended[order.order_id] = {"symbol": order.symbol, "qty": order.qty, "price": order.price,
                                       "made": model.clock, "legs": legs, "filled": {}, "finals": set(),
                                       "side": order.side, "group": None, "reduce": True}
        while len(model.ended) > 64:
            del model.ended[next(iter(model.ended))]
        self.emitted.append(order.order_id)

    def apply_fill(self, value: dict[str, Any], changes: bool) -> None:
        result = self.processor.on_fill(validate(Fill, value), self.offset)
        self.offset += 1
        if value["event_id"] in self.model.fill_ids:
            assert result.outcome == "duplicate"
            return
        self.model.fill_ids.add(value["event_id"])
        if changes:
            self.model.move_clock(value["ts"])

    def order_for(self, pick: int) -> str:
        """Mostly an open order; sometimes one already terminal, or one never emitted."""
        open_orders = list(self.model.orders)
        if open_orders and pick % 5:
            return open_orders[pick % len(open_orders)]
        if self.emitted and pick % 5 == 0 and pick % 2:
            return self.emitted[pick % len(self.emitted)]
        return f"o-unknown-{pick}"

    def fill_id(self, resend: int) -> str:
        if resend < len(self.fill_ids) and resend % 4 == 0:
            return self.fill_ids[resend]
        self.fill_ids.append(f"f{next(self.ids)}")
        return self.fill_ids[-1]

    @rule(pick=st.integers(0, 40), venue=st.sampled_from([None, 0, 1, "NOT-A-LEG"]),
          share=st.sampled_from(["0.25", "0.5", "1", "1.5"]), final=st.booleans(),
          shift=st.sampled_from([0, 1, -600, 7_200]), resend=st.integers(0, 30))
    def fill(self, pick, venue, share, final, shift, resend):
        with localcontext() as ctx:
            ctx.prec = EXACT
            self.filled(pick, venue, share, final, shift, resend)

    def filled(self, pick, venue, share, final, shift, resend):
        event_id = self.fill_id(resend)
        order_id = self.order_for(pick)
        model = self.model
        order = model.orders.get(order_id) or model.ended.get(order_id)
        # an execution engine may name the venue symbol, not the order's: it is booked on the order's
        symbol = "X" if order is None else (order["symbol"] if pick % 3 else "XUSDT")
        base_qty = order["qty"] if order else D(1)
        price = (order["price"] if order else D(10)) * D("1.01")
        legs = order["legs"] if order else ("XUSDT",)
        venue_symbol = venue if venue in (None, "NOT-A-LEG") else (legs[venue] if venue < len(legs) else None)
        kind, size, _ = UNITS.get(venue_symbol, ("spot", D(1), None)) if order else ("spot", D(1), None)
        # the fill reports the named leg's units: contracts of `size` base (linear) or quote (inverse) units
        if kind == "linear":
            qty = base_qty * D(share) / size
        elif kind == "inverse":
            qty = (base_qty * order["price"] / size * D(share)).to_integral_value(ROUND_FLOOR) or D(1)
        else:
            qty = base_qty * D(share)
        value = {"event_id": event_id, "portfolio_id": "p1", "ts": self.now() + shift * SECOND,
                 "type": "order_filled", "order_id": order_id, "symbol": symbol, "qty": str(qty),
                 "price": str(price), "final": final, "venue_symbol": venue_symbol}
        duplicate = event_id in model.fill_ids
        self.apply_fill(value, changes=True)
        if duplicate:
            return
        if order is None:
            model.add_position(symbol, qty, price)  # no order known: applied in full
            for name in model.legs.get(symbol, {}):  # to the whole position: every leg
                model.legs[symbol][name] += qty
            return
        hit = (venue_symbol,) if venue_symbol in order["legs"] else order["legs"]
        before = max(order["filled"].values(), default=D(0))
        before_legs = dict(order["filled"])
        if venue_symbol not in order["legs"] or kind == "spot":
            base = qty
        elif kind == "linear":
            base = qty * size
        else:  # contracts of quote units at the fill's price, to 1e-18 base units (README)
            base = (qty * size / price).quantize(D("1e-18"), rounding=ROUND_HALF_EVEN)
        for name in hit:
            order["filled"][name] = order["filled"].get(name, D(0)) + base
        after = max(order["filled"].values())
        if not order["reduce"]:  # one leg's growth, on the order's symbol
            leg_held = model.legs.setdefault(order["symbol"], {})
            qty_before = model.positions.get(order["symbol"], [D(0)])[0]
            for name in order["legs"]:
                grown = order["filled"].get(name, D(0)) - before_legs.get(name, D(0))
                leg_held[name] = leg_held.get(name, qty_before) + grown
            model.add_position(order["symbol"], after - before, price, order["side"], order["group"])
        if final:
            order["finals"].update(hit)
        if order_id in model.ended or order["finals"] >= set(order["legs"]) or all(
                order["filled"].get(name, D(0)) >= order["qty"] for name in order["legs"]):
            model.end(order_id)

    @rule(pick=st.integers(0, 40), shift=st.sampled_from([0, 5, 31_536_000]), resend=st.integers(0, 30))
    def cancel(self, pick, shift, resend):
        event_id = self.fill_id(resend)
        order_id = self.order_for(pick * 7 + 3) if pick % 3 else self.order_for(pick)
        held = order_id in self.model.orders
        value = {"event_id": event_id, "portfolio_id": "p1", "ts": self.now() + shift * SECOND,
                 "type": "order_canceled", "order_id": order_id}
        duplicate = event_id in self.model.fill_ids
        self.apply_fill(value, changes=held)  # a cancel of no open order moves no clock
        if held and not duplicate:
            self.model.end(order_id)

    @rule(symbol=st.sampled_from(SYMBOLS), share=st.sampled_from(["0.5", "1", "3"]),
          pnl=st.sampled_from(["-40", "-1", "0", "2", "900", "-6000", "-120000"]), shift=st.sampled_from([0, 1, -30]),
          resend=st.integers(0, 30))
    def close(self, symbol, share, pnl, shift, resend):
        event_id = self.fill_id(resend)
        held = self.model.positions.get(symbol)
        # a held quantity converted from an inverse leg's contracts has 18 decimals: a share of it on the wire too
        qty = ((held[0] if held and held[0] > 0 else D(1)) * D(share)).quantize(D("1e-18"), rounding=ROUND_FLOOR)
        value = {"event_id": event_id, "portfolio_id": "p1", "ts": self.now() + shift * SECOND,
                 "type": "position_closed", "symbol": symbol, "qty": str(qty), "price": "10", "realized_pnl": pnl}
        duplicate = event_id in self.model.fill_ids
        self.apply_fill(value, changes=True)
        if duplicate:
            return
        self.model.close(D(pnl))
        if D(pnl) < 0:
            self.model.lost(symbol, value["ts"])
        if not held:
            return
        with localcontext() as ctx:
            ctx.prec = EXACT
            if qty >= held[0]:
                self.model.drop_position(symbol)
            else:
                for name, leg_qty in self.model.legs.get(symbol, {}).items():  # every leg closes the quantity
                    self.model.legs[symbol][name] = max(leg_qty - qty, D(0))
                left = held[0] - qty
                # the closed quantity's share of the entry notional goes; the rest stays,
                # rounded half-even to 1e-18 USD (docs: the pipeline, "State")
                held[1] = (held[1] * left / held[0]).quantize(D("1e-18"), rounding=ROUND_HALF_EVEN)
                held[0] = left

    @rule(kind=st.sampled_from(["halt", "resume", "release", "adjust_equity"]), pick=st.integers(0, 40),
          amount=st.sampled_from(["-50000", "-1", "2500", "100000", "-150000", "-99999.99"]),
          resend=st.integers(0, 10), shift=st.sampled_from([0, 31_536_000]),
          mode=st.sampled_from(["full", "reduce_only", None]), clear=st.booleans())
    def command(self, kind, pick, amount, resend, shift, mode, clear):
        command_id = f"c{resend}" if resend % 3 == 0 else f"c{next(self.ids)}"
        value = {"command_id": command_id, "portfolio_id": "p1", "ts": self.now() + shift * SECOND, "type": kind,
                 "operator": "ops", "reason": "test"}
        order_id = self.order_for(pick)
        if kind == "release":
            value["order_id"] = order_id
        if kind == "adjust_equity":
            value["amount"] = amount
        if kind == "halt" and mode is not None:
            value["mode"] = mode
        if kind == "resume" and clear:
            value["clear"] = ["max_drawdown"]
        before = self.processor.store.load("p1").streak
        result = self.processor.on_control(validate(Control, value), self.offset)
        self.offset += 1
        model = self.model
        if command_id in model.command_ids:
            assert result.outcome == "duplicate"
            return
        self.commands_since.append(self.offset - 1)
        model.command_ids.add(command_id)
        if kind == "halt":
            model.halt = "REDUCE_ONLY" if mode == "reduce_only" else "HALTED"
        elif kind == "resume":
            model.halt = None
            if clear and model.latched:  # a tripped latch is lifted and re-armed from the equity now
                model.latched, model.near_limit = False, False
                model.peak, model.emptied = model.equity, None
            # with none tripped, `clear` releases nothing: the peak stays where it is
        elif kind == "adjust_equity":
            after = self.processor.store.load("p1").streak
            old_pct, new_pct = engine_drawdown(before), engine_drawdown(after)
            if before.equity > 0 and after.equity > 0:
                # a deposit or withdrawal never changes the drawdown (rounding only lowers it)
                assert new_pct <= old_pct and old_pct - new_pct < Fraction(1, 10**90), (old_pct, new_pct)
            model.adjust(D(amount))
        elif kind == "release":
            assert result.outcome == ("applied" if order_id in model.orders else "no_effect")
            if order_id in model.orders:
                model.end(order_id)

    @invariant()
    def clock_matches(self):
        if hasattr(self, "processor"):
            assert self.processor.store.load("p1").exposure.latest_ts == self.model.clock

    @invariant()
    def latches_and_equity_match(self):
        """A breach is never lost (to a halt, a plain resume or anything else), equity
        is the model's exactly, and the peak is the model's to the engine's rounding."""
        if not hasattr(self, "processor"):
            return
        state = self.processor.store.load("p1")
        model = self.model
        assert Fraction(state.streak.equity) == model.equity
        assert state.controls.halt is None if model.halt is None else state.controls.halt.reason == model.halt
        latched = state.controls.max_drawdown is not None
        assert latched == model.latched or model.near_limit, (latched, model.latched, model.drawdown_pct())
        peak = Fraction(state.streak.peak)
        assert abs(peak - model.peak) <= abs(model.peak) * Fraction(1, 10**90) + Fraction(1, 10**90)


def engine_drawdown(streak: Any) -> Fraction:
    """The engine's drawdown percentage, read from its state (0 without a positive peak)."""
    peak = Fraction(streak.peak)
    return (peak - Fraction(streak.equity)) * 100 / peak if peak > 0 else Fraction(0)


TestCapMachine = CapMachine.TestCase
TestCapMachine.settings = settings(max_examples=300, stateful_step_count=80, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
