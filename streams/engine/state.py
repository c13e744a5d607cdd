"""Per-portfolio state as immutable values, and every transition driven by fills.

`Exposure` is the value of the `exposure` table and `Streak` the value of the
`streak` table; both are keyed by portfolio id. Transitions return new values
and share what did not change.
"""

from __future__ import annotations

from itertools import islice
from types import MappingProxyType
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Literal, Mapping, NamedTuple

from streams.config import SizingConfig
from streams.wire.decimals import ENGINE_CONTEXT, ZERO, canonical, engine_context_active
from streams.engine.constraints import base_of
from streams.engine.recent import RecentIds
from streams.wire.models import OrderCanceled, OrderFilled, PositionClosed, fields_of


class Position(NamedTuple):
    """An open position in one symbol: gross base quantity and what it cost at entry
    (USD); `side` the side of the order that opened it and `group` the instrument
    group of the latest order that added to it (None: not known, e.g. filled for an
    order the sizer never made)."""

    qty: Decimal
    entry_notional: Decimal
    side: str | None = None
    group: str | None = None
    # base quantity held on each leg that holds less than `qty` (an order whose legs
    # filled unevenly: a pair's spot leg filled, its perp leg not yet); a leg absent holds `qty`
    legs: Mapping[str, Decimal] = MappingProxyType({})

    def held_on(self, venue_symbols: tuple[str, ...]) -> Decimal:
        """The base quantity every one of these legs holds (what a reduce can exit)."""
        legs = self.legs
        return min((legs.get(v, self.qty) for v in venue_symbols), default=self.qty) if legs else self.qty


NO_POSITION = Position(ZERO, ZERO)
# A partial close keeps its share of the entry notional, rounded half-even to 1e-18 USD.
ENTRY_NOTIONAL_QUANTUM = Decimal("1e-18")
EMPTY: Mapping[str, Any] = MappingProxyType({})

# `record(Kind, (field, ...))`: a NamedTuple value of every field, in declaration order,
# built without the generated constructor's Python frame (a transition builds several
# per input).
record: Any = tuple.__new__


class Book(dict):  # type: ignore[type-arg]
    """A mapping of the state (reservations, positions) that nobody changes once it is
    made: a transition makes a new one. What a decision derives from it (the totals
    per symbol) is computed once and kept with it, since most decisions read a
    portfolio's book unchanged. Changing it in place raises TypeError."""

    # what a decision derives from the book, computed on first use (None: not yet)
    derived: Any = None

    def _frozen(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a state book is immutable: build a new one")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _frozen  # type: ignore

    def __reduce__(self) -> Any:
        return (type(self), (dict(self),))

    def __copy__(self) -> "Book":
        return self

    def __deepcopy__(self, memo: Any) -> "Book":
        return self

    def with_entry(self, key: str, value: Any) -> "Book":
        """A new book with `key` set to `value`."""
        book = Book(self)
        dict.__setitem__(book, key, value)
        return book

    def without(self, key: str) -> "Book":
        """A new book without `key` (which it holds), the rest in their order."""
        book = Book(self)
        dict.__delitem__(book, key)
        return book


def book(mapping: Mapping[str, Any]) -> Book:
    """`mapping` as a Book (itself when it is one already)."""
    return mapping if type(mapping) is Book else Book(mapping)


def _totals_by_symbol(book_: Book) -> tuple[Decimal, dict[str, Decimal]]:
    """(all reserved notional, reserved notional per symbol) of a reservations book,
    summed in the book's order (the same Decimals as a pass over it), once per book."""
    derived = book_.derived
    if derived is not None:
        return derived  # type: ignore[no-any-return]
    total = ZERO
    per_symbol: dict[str, Decimal] = {}
    for r in book_.values():
        total += r.notional
        per_symbol[r.symbol] = per_symbol.get(r.symbol, ZERO) + r.notional
    book_.derived = (total, per_symbol)
    return book_.derived


class Reservation(NamedTuple):
    """Notional held for an order that is not terminal yet (not filled final,
    canceled, released or lapsed).

    `qty` is the order's quantity on every leg and `ts` the portfolio clock when
    it was made. `legs` are the order's venue symbols; `filled` the quantity
    filled so far per leg (legs not yet filled are absent) and `finals` the legs
    reported final. The order's filled quantity is the largest among its legs
    (one-leg notional, as the cap measures it), and `notional` is what is still
    reserved: (qty - filled) * price, never below zero."""

    symbol: str
    qty: Decimal
    price: Decimal
    ts: int
    notional: Decimal
    legs: tuple[str, ...] = ("",)
    filled: Mapping[str, Decimal] = EMPTY
    finals: frozenset[str] = frozenset()
    side: str | None = None  # the order's side; None: made before sides were recorded
    group: str | None = None  # its instrument's group (group caps)
    reduce: bool = False  # a reduce order: never reserved; its fills never add to the position
    units: tuple[tuple[str, Decimal], ...] = ()  # per leg (kind, contract_size); (): every leg spot

    def base_qty(self, venue_symbol: str | None, qty: Decimal, price: Decimal) -> Decimal:
        """A fill's `qty` as a base quantity: in the units of the leg it names
        (`constraints.base_of`), base units when it names none of them."""
        if not self.units or venue_symbol not in self.legs:
            return qty
        kind, contract_size = self.units[self.legs.index(venue_symbol)]
        return base_of(kind, contract_size, qty, price)

    @property
    def filled_qty(self) -> Decimal:
        return max(self.filled.values(), default=ZERO)


def reservation(symbol: str, qty: Decimal, price: Decimal, ts: int, legs: tuple[str, ...] = ("",),
                side: str | None = None, group: str | None = None,
                units: tuple[tuple[str, Decimal], ...] = ()) -> Reservation:
    """A new order's reservation: all of base `qty` * `price` held, nothing filled yet;
    `units` each leg's (kind, contract_size), () when every leg is spot."""
    return Reservation(symbol, qty, price, ts, qty * price, legs, EMPTY, frozenset(), side, group, False, units)


class Mark(NamedTuple):
    """The latest price of a symbol among the signals that passed the gates, and its event time."""

    price: Decimal
    ts: int


# How many ended orders (filled, canceled, released, lapsed) a portfolio remembers
# with their leg progress: a leg fill that arrives after its order ended (a cancel
# racing the fills, a lapse) still counts once, and a resent signal of such an
# order is a duplicate, not a second order under the same id.
ENDED_ORDERS_KEPT = 64


class Exposure(NamedTuple):
    positions: Mapping[str, Position] = EMPTY
    reservations: Mapping[str, Reservation] = EMPTY
    marks: Mapping[str, Mark] = EMPTY
    latest_ts: int | None = None  # the portfolio clock (DESIGN.md, "Event time")
    last_fill_offset: int | None = None
    seen_signals: RecentIds = RecentIds()
    ended_orders: Mapping[str, Reservation] = EMPTY  # oldest first, at most ENDED_ORDERS_KEPT
    recent_opens: tuple[int, ...] = ()  # portfolio clock of each accepted open still inside the order rate window

    def ended(self, order_id: str) -> Reservation | None:
        """An order that ended recently, with its leg progress (no longer reserved)."""
        return self.ended_orders.get(order_id)


def remember_ended(ended_orders: Mapping[str, Reservation], order_id: str, order: Reservation
                   ) -> Mapping[str, Reservation]:
    """The ended orders with `order_id` (re)recorded as the newest, within ENDED_ORDERS_KEPT
    (a new mapping, in the order they ended)."""
    # Built anew from the entries kept, never by deleting the oldest from a copy: a dict
    # that had entries deleted keeps their slots (a copy of it, and a search for its
    # first entry, then pass over every one), and this runs every time an order ends.
    if order_id in ended_orders:
        kept = {oid: r for oid, r in ended_orders.items() if oid != order_id}
    else:
        kept = dict(ended_orders)  # a copy at C speed
    if len(kept) >= ENDED_ORDERS_KEPT:
        kept = dict(islice(kept.items(), len(kept) - ENDED_ORDERS_KEPT + 1, None))
    kept[order_id] = as_ended(order)
    return kept


def as_ended(order: Reservation) -> Reservation:
    """`order` as an ended order: nothing reserved any more (`notional` 0)."""
    return record(Reservation, order[:_NOTIONAL] + (ZERO,) + order[_NOTIONAL + 1:])  # type: ignore[no-any-return]


def progressed(order: Reservation, filled: Mapping[str, Decimal], finals: frozenset[str], notional: Decimal
               ) -> Reservation:
    """`order` with its legs' progress: `filled`, `finals` and the `notional` still reserved
    (`_replace` without its Python pass over every field: this runs on every fill)."""
    return record(Reservation, order[:_NOTIONAL] + (notional, order[_NOTIONAL + 1], filled, finals)  # type: ignore[no-any-return]
                  + order[_NOTIONAL + 4:])


_NOTIONAL = Reservation._fields.index("notional")
assert Reservation._fields[_NOTIONAL:_NOTIONAL + 4] == ("notional", "legs", "filled", "finals")


class Streak(NamedTuple):
    equity: Decimal
    phase: int = 1
    consecutive_wins: int = 0
    consecutive_losses: int = 0
    drawdown: bool = False
    closed_trades: int = 0
    wins: int = 0
    losses: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO
    seen_fills: RecentIds = RecentIds()
    peak_equity: Decimal | None = None  # the highest equity, less withdrawals; None: never above the start
    last_loss: Mapping[str, int] = EMPTY  # symbol -> event time of its latest losing close (cooldown)
    loss_times: tuple[int, ...] = ()  # event times of losing closes inside the loss guard's window
    paused_until: int | None = None  # the loss guard's pause ends at this event time
    # the drawdown (a fraction of the peak) when a withdrawal took equity from above zero
    # to at or below it, kept while it stays there: equity back above zero is that far
    # below its peak again (`scaled_peak`, `book_close`); None: not emptied by a withdrawal
    emptied_drawdown: Decimal | None = None

    @property
    def peak(self) -> Decimal:
        return self.equity if self.peak_equity is None or self.peak_equity < self.equity else self.peak_equity

    def remembering(self, seen_fills: RecentIds) -> "Streak":
        """The same record with another fill-dedupe window."""
        return record(Streak, self[:_SEEN_FILLS] + (seen_fills,) + self[_SEEN_FILLS + 1:])  # type: ignore[no-any-return]

    @property
    def win_rate(self) -> Decimal:
        return Decimal(self.wins) / self.closed_trades if self.closed_trades else ZERO

    @property
    def profit_factor(self) -> Decimal | None:
        """gross profit / gross loss; None (unbounded) when there is profit and no loss."""
        if self.gross_loss:
            return self.gross_profit / self.gross_loss
        return None if self.gross_profit else ZERO


_SEEN_FILLS = Streak._fields.index("seen_fills")


class Halt(NamedTuple):
    """A latch in force: an operator's halt, or the drawdown kill switch (no command)."""

    reason: str  # "HALTED" | "REDUCE_ONLY" (an operator's, by mode) | "MAX_DRAWDOWN": what its opens are rejected
    command_id: str | None
    operator: str
    text: str  # the operator's reason, or the drawdown that tripped it
    ts: int


class Controls(NamedTuple):
    """The operator controls of one portfolio: two independent latches (the
    operator's halt and the drawdown kill switch), the commands already applied
    (dedupe) and the offset of the last one.

    `halt` is the operator's (HALTED, or REDUCE_ONLY in mode `reduce_only`): only a
    `resume` lifts it. `max_drawdown` is the kill switch's latch (MAX_DRAWDOWN),
    set by a close whatever the operator's halt: only a `resume` with
    `clear: ["max_drawdown"]` lifts it.

    `applied` lists the commands applied since the last decision, each as (its
    offset, the offset of the last fill applied before it): commands and fills come
    on two topics, and their interleaving is part of the outcome (an equity
    adjustment before or after a close), so the next decision's trace carries it
    for the audit, and no later one does."""

    halt: Halt | None = None
    seen_commands: RecentIds = RecentIds()
    last_control_offset: int | None = None
    applied: tuple[tuple[int, int | None], ...] = ()
    max_drawdown: Halt | None = None


class PortfolioState(NamedTuple):
    exposure: Exposure
    streak: Streak
    controls: Controls = Controls()

    @classmethod
    def fresh(cls, config: SizingConfig, portfolio_id: str | None = None) -> "PortfolioState":
        """A portfolio never seen before: no positions, phase 1, the starting equity
        (of `portfolio_id`'s own configuration when given: `SizingConfig.for_portfolio`)."""
        if portfolio_id is not None:
            config = config.for_portfolio(portfolio_id)
        return cls(Exposure(), Streak(equity=config.starting_equity))

    def position_value(self, config: SizingConfig) -> Decimal:
        """Open positions in USD on the configured basis (entry cost, or latest signal price)."""
        return held_value(self.exposure, None, config)[0]

    def reserved(self, symbol: str | None = None) -> Decimal:
        """Notional reserved for open orders, for one symbol or all (nothing lapsed)."""
        total, for_symbol = reserved_totals(self.exposure.reservations, symbol)
        return total if symbol is None else for_symbol


def advance_clock(clock: int | None, ts: int) -> int:
    """The portfolio clock after an input stamped `ts` moved it: it never goes back."""
    return ts if clock is None or ts > clock else clock


def reserved_totals(reservations: Mapping[str, Reservation], symbol: str | None) -> tuple[Decimal, Decimal]:
    """(all reserved notional, the part reserved for `symbol`), in one pass (once per
    `Book`: a decision that leaves the reservations alone leaves them to the next)."""
    if type(reservations) is Book:
        total, per_symbol = _totals_by_symbol(reservations)
        return total, per_symbol.get(symbol, ZERO) if symbol is not None else ZERO
    total = for_symbol = ZERO
    for r in reservations.values():
        total += r.notional
        if r.symbol == symbol:
            for_symbol += r.notional
    return total, for_symbol


class OpenReservations(NamedTuple):
    reservations: Mapping[str, Reservation]  # the same mapping when none lapsed
    lapsed: tuple[str, ...]  # order ids, in the mapping's order
    reserved: Decimal  # notional still reserved, in all
    reserved_symbol: Decimal  # ... and for the symbol asked about


def open_reservations(
    reservations: Mapping[str, Reservation], clock: int, symbol: str | None, config: SizingConfig,
) -> OpenReservations:
    """In one pass: the reservations still open at portfolio clock `clock`, those that
    lapsed, and the notional still reserved in all and for `symbol`. A reservation
    lapses only with a configured `reservation_ttl_s`, once the clock is that far past
    the clock it was made at; without one it lives until its order is terminal."""
    return record(OpenReservations, open_now(reservations, clock, symbol, config))  # type: ignore[no-any-return]


def open_now(reservations: Mapping[str, Reservation], clock: int, symbol: str | None, config: SizingConfig,
             ) -> tuple[Mapping[str, Reservation], tuple[str, ...], Decimal, Decimal]:
    """`open_reservations` as a plain tuple, for the decision that reads it once."""
    ttl = config.reservation_ttl_ms
    if ttl is None:
        total, for_symbol = reserved_totals(reservations, symbol)
        return reservations, (), total, for_symbol
    horizon = clock - ttl
    total = for_symbol = ZERO
    lapsed: list[str] = []
    for order_id, r in reservations.items():
        if r.ts <= horizon:
            lapsed.append(order_id)
            continue
        total += r.notional
        if r.symbol == symbol:
            for_symbol += r.notional
    if lapsed:
        gone = set(lapsed)
        reservations = Book((oid, r) for oid, r in reservations.items() if oid not in gone)
    return reservations, tuple(lapsed), total, for_symbol


def held_value(exposure: Exposure, symbol: str | None, config: SizingConfig) -> tuple[Decimal, Decimal]:
    """In one pass: open positions in USD on the configured basis, in all and in `symbol`
    (on the entry basis, once per positions `Book`)."""
    mark_basis = config.exposure_basis == "mark"
    if not mark_basis and type(exposure.positions) is Book:
        total, per_symbol = _entry_values(exposure.positions)
        return total, per_symbol.get(symbol, ZERO) if symbol is not None else ZERO
    total = in_symbol = ZERO
    marks = exposure.marks
    for name, position in exposure.positions.items():
        mark = marks.get(name) if mark_basis else None
        value = position.entry_notional if mark is None else position.qty * mark.price
        total += value
        if name == symbol:
            in_symbol = value
    return total, in_symbol


def _entry_values(positions: Book) -> tuple[Decimal, dict[str, Decimal]]:
    """(entry notional of all open positions, entry notional per symbol), once per book."""
    derived = positions.derived
    if derived is not None:
        return derived  # type: ignore[no-any-return]
    total = ZERO
    for position in positions.values():
        total += position.entry_notional
    positions.derived = (total, {name: position.entry_notional for name, position in positions.items()})
    return positions.derived


FillOutcome = Literal["applied", "duplicate", "overfill", "unknown_order"]
"""What a fill event did: `applied`; `duplicate` (an event id already applied:
nothing changed); `overfill` (applied, and a leg is now filled beyond the order's
quantity); `unknown_order` (a fill applied in full, or a cancel that changed
nothing, for an order with no open reservation)."""


class FillApplied(NamedTuple):
    state: PortfolioState
    outcome: FillOutcome

    @property
    def changed(self) -> bool:
        return self.outcome != "duplicate"


def apply_fill(
    fill: OrderFilled | OrderCanceled | PositionClosed,
    state: PortfolioState,
    config: SizingConfig,
    offset: int | None = None,
) -> FillApplied:
    """Apply one fill event (DESIGN.md, "State"): the new state and what the fill did.
    A duplicate `event_id` leaves the state exactly as it was.

    `order_filled` adds the growth of the order's filled quantity (the largest
    among its legs) at the fill's price to the symbol's position and takes it off
    the reservation; the order is terminal once every leg is final or filled. A
    fill naming no leg, or a leg the order does not have, fills every leg. A fill
    for an order with no open reservation is applied in full (the cap errs on the
    safe side). `order_canceled` releases the rest of the reservation;
    `position_closed` takes the quantity off the position (its share of the entry
    notional) and books `realized_pnl`. Every fill that changed the state moves the
    portfolio clock forward to its `ts`.

    `offset` is the fill's input offset, recorded so a decision trace can name
    the last fill applied before it. Arithmetic is exact (`decimals.ENGINE_CONTEXT`).
    `config` may hold `[portfolios."ID"]` tables: the fill's portfolio's own applies.
    """
    kind = type(fill)
    fill = fields_of(fill)  # read as plain attributes from here on
    config = config.for_portfolio(fill.portfolio_id)
    if engine_context_active():
        return _apply_fill(kind, fill, state, config, offset)
    with localcontext(ENGINE_CONTEXT):
        return _apply_fill(kind, fill, state, config, offset)


def _apply_fill(
    kind: type[OrderFilled | OrderCanceled | PositionClosed],
    fill: OrderFilled | OrderCanceled | PositionClosed,
    state: PortfolioState,
    config: SizingConfig,
    offset: int | None,
) -> FillApplied:
    """`apply_fill` of a fill of model `kind`, read through `models.fields_of`."""
    exposure, streak, controls = state  # each record read once (a NamedTuple field read is a descriptor call)
    event_id, seen_fills = fill.event_id, streak.seen_fills
    if event_id in seen_fills:
        return FillApplied(state, "duplicate")
    streak = streak.remembering(seen_fills.add(event_id, config.fill_dedupe_window))
    _, _, marks, clock, last_fill_offset, seen_signals, _, recent_opens = exposure
    if offset is not None:
        last_fill_offset = offset
    if issubclass(kind, OrderFilled):
        books = _order_filled(fill, exposure)  # type: ignore[arg-type]
    elif issubclass(kind, OrderCanceled):
        if fill.order_id not in exposure.reservations:
            # nothing to release: the clock stays, but the event id is remembered and its
            # offset recorded (the audit places every applied fill by it)
            if offset is not None:
                exposure = exposure._replace(last_fill_offset=offset)
            return record(FillApplied, (record(PortfolioState, (exposure, streak, controls)),  # type: ignore[no-any-return]
                                        "unknown_order"))
        books = _order_canceled(fill, exposure)  # type: ignore[arg-type]
    else:
        books = _position_closed(fill, exposure)  # type: ignore[arg-type]
        streak = book_close(streak, fill.realized_pnl, config)
        if fill.realized_pnl < 0:
            streak = book_loss(streak, fill.symbol, fill.ts, config)
    positions, reservations, ended_orders, outcome = books
    ts = fill.ts
    exposure = record(Exposure, (
        book(positions), book(reservations), marks, advance_clock(clock, ts),
        last_fill_offset, seen_signals, ended_orders, recent_opens,
    ))
    if issubclass(kind, PositionClosed) and controls.max_drawdown is None:
        # every close, whether or not an operator's halt is in force: a breach is never hidden
        tripped = drawdown_tripped(streak, config)
        if tripped is not None:
            controls = controls._replace(max_drawdown=Halt("MAX_DRAWDOWN", None, "sizer", tripped, fill.ts))
    return record(FillApplied, (record(PortfolioState, (exposure, streak, controls)), outcome))  # type: ignore[no-any-return]


class _Books(NamedTuple):
    """What one fill event changed in the exposure: its positions, its reservations,
    the orders that ended, and the fill's outcome."""

    positions: Mapping[str, Position]
    reservations: Mapping[str, Reservation]
    ended_orders: Mapping[str, Reservation]
    outcome: FillOutcome


def _order_filled(fill: OrderFilled, exposure: Exposure) -> _Books:
    """A fill of an order: the order's legs progress (its reservation ends once every
    leg is final or filled), and the position grows by what the order's fill grew by.
    A fill of an order that already ended counts only its legs' growth; of an order
    never seen, its whole quantity (`unknown_order`). More than the order's quantity
    on a leg is `overfill`."""
    positions, reservations, ended_orders = exposure.positions, exposure.reservations, exposure.ended_orders
    outcome: FillOutcome = "applied"
    held_order = reservations.get(fill.order_id)
    order = held_order if held_order is not None else exposure.ended(fill.order_id)
    symbol = fill.symbol
    side = group = None
    grown: Mapping[str, Decimal] = EMPTY
    if order is None:
        added = fill.qty
        outcome = "unknown_order"
    else:
        symbol = order.symbol  # the order's own symbol, whatever the fill calls it
        side, group = order.side, order.group
        legs = order.legs
        hit = (fill.venue_symbol,) if fill.venue_symbol in legs else legs
        filled = dict(order.filled)
        base_filled = order.base_qty(fill.venue_symbol, fill.qty, fill.price)  # the leg's units converted
        for leg in hit:
            filled[leg] = filled.get(leg, ZERO) + base_filled
        now_filled = max(filled.values())
        added = now_filled - order.filled_qty if not order.reduce else ZERO  # a reduce's close books it
        if not order.reduce:
            grown = {leg: filled.get(leg, ZERO) - order.filled.get(leg, ZERO) for leg in legs}
        if any(filled[leg] > order.qty for leg in hit):
            outcome = "overfill"
        finals = order.finals | frozenset(hit) if fill.final else order.finals
        left = order.qty - now_filled
        progress = progressed(order, filled, finals, left * order.price if left > 0 else ZERO)
        if held_order is None:
            # a fill of an order that already ended: only its legs' growth counts
            ended_orders = remember_ended(ended_orders, fill.order_id, progress)
        elif finals.issuperset(legs) or all(filled.get(leg, ZERO) >= order.qty for leg in legs):
            reservations = book(reservations).without(fill.order_id)
            ended_orders = remember_ended(ended_orders, fill.order_id, progress)
        else:
            reservations = book(reservations).with_entry(fill.order_id, progress)
    if added or grown:
        held = positions.get(symbol, NO_POSITION)
        qty = held.qty + added
        positions = book(positions).with_entry(symbol, Position(
            qty, held.entry_notional + added * fill.price,
            # the group of the order that added to it last (its instrument as last sized: a group
            # changed by a republished instrument moves the whole position), else the one it had
            held.side if held.side is not None else side, group if group is not None else held.group,
            _legs_held(held, grown, qty)))
    return _Books(positions, reservations, ended_orders, outcome)


def _legs_held(held: Position, grown: Mapping[str, Decimal], qty: Decimal) -> Mapping[str, Decimal]:
    """The legs of a position that hold less than its `qty` once each leg of an order grew
    by `grown` (base units): each leg's own quantity, from what it held before."""
    legs = {leg: q for leg, q in held.legs.items() if q < qty}
    for leg, growth in grown.items():
        legs[leg] = held.legs.get(leg, held.qty) + growth
    short = {leg: q for leg, q in legs.items() if q < qty}
    return short if short else EMPTY


def _order_canceled(fill: OrderCanceled, exposure: Exposure) -> _Books:
    """A cancel of a held order: its reservation is released and the order ended."""
    reservations = exposure.reservations
    ended_orders = remember_ended(exposure.ended_orders, fill.order_id, reservations[fill.order_id])
    reservations = book(reservations).without(fill.order_id)
    return _Books(exposure.positions, reservations, ended_orders, "applied")


def _position_closed(fill: PositionClosed, exposure: Exposure) -> _Books:
    """A close of (part of) a position: the position shrinks, its entry notional in
    proportion; a close of a symbol with no position changes nothing held."""
    positions = exposure.positions
    held = positions.get(fill.symbol)
    if held is not None:
        if fill.qty >= held.qty:
            positions = book(positions).without(fill.symbol)
        else:
            left = held.qty - fill.qty
            share = (held.entry_notional * left / held.qty).quantize(ENTRY_NOTIONAL_QUANTUM)
            # every leg closes the quantity: a leg that held less keeps what is left of it, if any
            legs = {leg: max(q - fill.qty, ZERO) for leg, q in held.legs.items()}
            positions = book(positions).with_entry(fill.symbol, held._replace(qty=left, entry_notional=share,
                                                                              legs=legs or EMPTY))
    return _Books(positions, exposure.reservations, exposure.ended_orders, "applied")


def book_loss(streak: Streak, symbol: str, ts: int, config: SizingConfig) -> Streak:
    """What a losing close of `symbol` at event time `ts` (ms) starts: the symbol's
    cooldown (`cooldown_after_loss_s`), and the loss guard's count of losses in its
    window; the loss that makes `loss_guard_count` of them within one window (by
    their event times, whatever order they arrive in) pauses every open until `ts` +
    `loss_guard_pause_s` and starts the count again. Only what is configured
    is kept, so a portfolio without these protections carries nothing for them."""
    if config.cooldown_ms is not None:
        # a late close never moves a symbol's cooldown back
        if streak.last_loss.get(symbol, ts) <= ts:
            streak = streak._replace(last_loss={**streak.last_loss, symbol: ts})
    guard = config.loss_guard_ms
    if guard is not None:
        count, window, pause = guard
        losses = tuple(sorted((*streak.loss_times, ts)))
        if _losses_together(losses, ts, count, window):
            until = ts + pause
            paused = streak.paused_until
            streak = streak._replace(loss_times=(), paused_until=until if paused is None or until > paused else paused)
        else:
            latest = losses[-1]
            streak = streak._replace(loss_times=tuple(t for t in losses if t > latest - window))
    return streak


def _losses_together(losses: tuple[int, ...], ts: int, count: int, window: int) -> bool:
    """Whether `count` of the losing closes at `losses` (event times, ascending), the
    one at `ts` among them, fall within one loss guard window: less than `window` ms
    from the first to the last, whatever order they arrived in."""
    for i, start in enumerate(losses):
        if start > ts:
            break
        if ts - start < window and sum(1 for t in losses[i:] if t - start < window) >= count:
            return True
    return False


def drawdown_tripped(streak: Streak, config: SizingConfig) -> str | None:
    """The kill switch: equity `max_drawdown_pct` or more below its peak (or, with no
    positive peak left, any loss below it). Returns the `key=value` detail of the
    halt, or None."""
    limit = config.max_drawdown_pct
    if limit is None:
        return None
    peak = streak.peak
    if peak <= 0:
        # no equity left to measure a percentage of: any further loss trips it
        if streak.equity < peak:
            return f"equity={canonical(streak.equity)} peak_equity={canonical(peak)} drawdown_pct=unbounded " \
                   f"max_drawdown_pct={canonical(limit)}"
        return None
    if drawdown_percent(streak) < limit:
        return None
    return (f"equity={canonical(streak.equity)} peak_equity={canonical(peak)} "
            f"drawdown_pct={canonical(drawdown_shown(streak))} max_drawdown_pct={canonical(limit)}")


def drawdown_percent(streak: Streak) -> Decimal:
    """How far equity is below its peak, in percent of the peak (0 at or above it;
    the peak must be positive)."""
    peak = streak.peak
    return (peak - streak.equity) * 100 / peak


def drawdown_shown(streak: Streak) -> Decimal | None:
    """The drawdown as traces, details and `control status` write it: percent to 4
    places (half-even); None without a positive peak."""
    return drawdown_percent(streak).quantize(_PCT_SHOWN) if streak.peak > 0 else None


_PCT_SHOWN = Decimal("0.0001")


def adjusted_equity(streak: Streak, new_equity: Decimal) -> Streak:
    """The streak after a deposit or withdrawal takes equity to `new_equity`: the peak
    scaled by new / old equity, so the drawdown percentage is what it was; rounded
    down (ROUND_FLOOR, at the engine's precision), so the percentage can only fall by
    the rounding, never rise. New equity at or below zero becomes the peak (no
    positive peak is left: any loss below it trips the switch, a win never does);
    from above zero, the drawdown it leaves is kept (`emptied_drawdown`), so equity
    back above zero (`back_above_zero`) is that far below its peak again: emptying
    the account and refilling it never resets the drawdown. Back above zero from
    equity at or below zero with no drawdown kept (a bust by losses), the peak
    stays, or rises to the new equity."""
    old, peak, kept = streak.equity, streak.peak, streak.emptied_drawdown
    if new_equity <= 0:
        if old > 0:
            with localcontext() as ctx:
                ctx.rounding = ROUND_FLOOR
                kept = (peak - old) / peak
        return streak._replace(equity=new_equity, peak_equity=new_equity, emptied_drawdown=kept)
    if old <= 0:
        return back_above_zero(streak._replace(equity=new_equity), max(peak, new_equity))
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        return streak._replace(equity=new_equity, peak_equity=peak * new_equity / old)


def back_above_zero(streak: Streak, peak: Decimal) -> Streak:
    """`streak`, whose equity is above zero, with the peak `peak`, or, when a
    withdrawal had emptied the account (`emptied_drawdown`), the peak that puts
    equity the drawdown it had then below it (rounded down: the percentage can only
    fall by the rounding); nothing kept any more."""
    kept = streak.emptied_drawdown
    if kept is None:
        return streak._replace(peak_equity=peak)
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        peak = streak.equity / (1 - kept)
    return streak._replace(peak_equity=peak, emptied_drawdown=None)


ControlOutcome = Literal["applied", "duplicate", "no_effect"]
"""What a command did: `applied`; `duplicate` (a command id already applied);
`no_effect` (a release of an order with no open reservation, a halt of a halted
portfolio, a resume of a running one: remembered, nothing else changed)."""


class ControlApplied(NamedTuple):
    state: PortfolioState
    outcome: ControlOutcome


def apply_control(command: Any, state: PortfolioState, config: SizingConfig, offset: int | None = None) -> ControlApplied:
    """Apply one operator command (DESIGN.md, "Operator controls") as a pure state
    transition. Commands are not market events: they never move the portfolio clock
    forward; only `reset_clock` sets it back, to the command's `ts`.

    `halt` sets the operator's halt (`mode` full: HALTED; reduce_only: REDUCE_ONLY;
    a halt in the mode already in force has no effect); `resume` lifts the
    operator's halt only, and with `clear: ["max_drawdown"]` also the drawdown
    latch when it is tripped, re-arming the kill switch from the equity now (peak =
    equity; with no latch tripped the peak is left alone);
    `release` drops one order's reservation; `adjust_equity` adds `amount` (USD,
    signed) to equity and scales the peak by new / old equity (`adjusted_equity`),
    leaving streaks, trade counts and PnL alone; `reset_clock` repairs a clock a
    future-stamped input poisoned (`reset_clock`). `offset` is the command's input
    offset, recorded for the next decision's trace.
    `config` may hold `[portfolios."ID"]` tables: the command's portfolio's own applies."""
    config = config.for_portfolio(command.portfolio_id)
    if engine_context_active():
        return _apply_control(command, state, config, offset)
    with localcontext(ENGINE_CONTEXT):
        return _apply_control(command, state, config, offset)


def _apply_control(command: Any, state: PortfolioState, config: SizingConfig, offset: int | None) -> ControlApplied:
    controls = state.controls
    if command.command_id in controls.seen_commands:
        return ControlApplied(state, "duplicate")
    controls = controls._replace(
        seen_commands=controls.seen_commands.add(command.command_id, config.fill_dedupe_window),
        last_control_offset=controls.last_control_offset if offset is None else offset,
        applied=controls.applied if offset is None else (
            *controls.applied, (offset, state.exposure.last_fill_offset)),
    )
    exposure, streak = state.exposure, state.streak
    outcome: ControlOutcome = "applied"
    kind = command.type
    if kind == "halt":
        reason = "REDUCE_ONLY" if command.mode == "reduce_only" else "HALTED"
        if controls.halt is None or controls.halt.reason != reason:
            controls = controls._replace(halt=Halt(reason, command.command_id, command.operator, command.reason,
                                                   command.ts))
        else:
            outcome = "no_effect"
    elif kind == "resume":
        # `clear` releases a tripped latch only: with none tripped there is nothing to
        # re-arm, and the peak the drawdown is measured from stays where it is
        clear_latch = "max_drawdown" in command.clear and controls.max_drawdown is not None
        if controls.halt is None and not clear_latch:
            outcome = "no_effect"
        else:
            controls = controls._replace(halt=None)
            if clear_latch:
                # re-armed from the equity at this moment
                controls = controls._replace(max_drawdown=None)
                streak = streak._replace(peak_equity=streak.equity, emptied_drawdown=None)
    elif kind == "release":
        released = exposure.reservations.get(command.order_id)
        if released is not None:
            exposure = exposure._replace(
                reservations=book(exposure.reservations).without(command.order_id),
                ended_orders=remember_ended(exposure.ended_orders, command.order_id, released))
        else:
            outcome = "no_effect"
    elif kind == "reset_clock":
        if exposure.latest_ts is None or exposure.latest_ts <= command.ts:
            outcome = "no_effect"
        else:
            exposure = reset_clock(exposure, command.ts)
            streak = reset_protections_clock(streak, command.ts, config)
    else:  # adjust_equity
        streak = adjusted_equity(streak, streak.equity + command.amount)
    return ControlApplied(PortfolioState(exposure, streak, controls), outcome)


def reset_clock(exposure: Exposure, ts: int) -> Exposure:
    """The portfolio clock set back to `ts` (epoch ms, before the clock), with every
    reservation, mark and accepted open (the order rate's) stamped after `ts`
    restamped at `ts`: a reservation's `reservation_ttl_s` then runs from `ts`, a
    mark moves again with the next signal after `ts`, and an open counts against
    `max_orders_per_window` for one window from `ts` (not until the clock passes
    the time it was stamped with). Positions, reservations' notionals and the
    dedupe windows are kept as they are."""
    return exposure._replace(
        latest_ts=ts,
        reservations=Book((oid, r._replace(ts=ts) if r.ts > ts else r) for oid, r in exposure.reservations.items()),
        marks=dict((symbol, m._replace(ts=ts) if m.ts > ts else m) for symbol, m in exposure.marks.items()),
        recent_opens=tuple(min(t, ts) for t in exposure.recent_opens),
    )


def reset_protections_clock(streak: Streak, ts: int, config: SizingConfig) -> Streak:
    """The protections' event times after `ts` restamped at `ts`, as `reset_clock` does
    the portfolio's: a losing close stamped after it starts its symbol's cooldown and
    counts for the loss guard at `ts`, and a loss guard pause ends at most
    `loss_guard_pause_s` after `ts`. Left as they were, they would outlive the repair
    by as far as the clock had been pushed ahead (COOLDOWN, LOSS_GUARD on every open)."""
    guard = config.loss_guard_ms
    paused = streak.paused_until
    if paused is not None and guard is not None and paused > ts + guard[2]:
        paused = ts + guard[2]
    return streak._replace(
        last_loss={symbol: min(t, ts) for symbol, t in streak.last_loss.items()},
        loss_times=tuple(min(t, ts) for t in streak.loss_times),
        paused_until=paused,
    )


def book_close(streak: Streak, pnl: Decimal, config: SizingConfig) -> Streak:
    """Book one closed trade: streaks, drawdown mode, equity, statistics, then promotion.

    A win (pnl > 0) or loss (pnl < 0) moves the streaks; pnl == 0 is a trade that
    touches neither. Drawdown mode starts after `loss_streak` consecutive losses
    and ends after `recovery_streak` consecutive wins. Phases only ever rise.
    """
    (equity, phase, wins, losses, drawdown, closed_trades, won, lost, gross_profit, gross_loss, seen_fills,
     _, last_loss, loss_times, paused_until, emptied_drawdown) = streak  # read once: no field by field
    peak = streak.peak
    if pnl > 0:
        wins, losses, won, gross_profit = wins + 1, 0, won + 1, gross_profit + pnl
        if drawdown and wins >= config.recovery_streak:
            drawdown = False
    elif pnl < 0:
        wins, losses, lost, gross_loss = 0, losses + 1, lost + 1, gross_loss - pnl
        if config.drawdown and losses >= config.loss_streak:
            drawdown = True
    equity = equity + pnl
    # built whole (`_replace` makes a Python pass over every field; this runs on every close)
    booked: Streak = record(Streak, (
        equity, phase, wins, losses, drawdown, closed_trades + 1, won, lost, gross_profit, gross_loss, seen_fills,
        max(peak, equity), last_loss, loss_times, paused_until, emptied_drawdown,
    ))
    if emptied_drawdown is not None and equity > 0:
        # a close is no deposit: back above zero, the drawdown kept since a withdrawal
        # emptied the account holds again
        booked = back_above_zero(booked, booked.peak)
    promoted = earned_phase(booked, config)
    return booked if promoted == phase else booked._replace(phase=promoted)


def earned_phase(streak: Streak, config: SizingConfig) -> int:
    """The phase after a close: one phase up when the live record meets the next
    phase's thresholds, else the current one. Promotion moves one phase at a time:
    a close never skips a phase, and phases never fall."""
    phase = streak.phase
    if phase >= len(config.phases):
        return phase
    target = config.phases[phase]  # phases are 1-based; index `phase` is the next one
    profit_factor = streak.profit_factor
    if (
        streak.closed_trades >= target.min_trades
        and streak.win_rate > target.min_win_rate
        and (profit_factor is None or profit_factor > target.min_profit_factor)
    ):
        return phase + 1
    return phase


def to_wire(state: PortfolioState) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (exposure, streak) table values as JSON data."""
    return exposure_to_wire(state.exposure), streak_to_wire(state.streak)


def exposure_to_wire(e: Exposure, *, window: bool = True, ended_orders: Any = None) -> dict[str, Any]:
    """The `exposure` table value as JSON data. `window=False`: `seen_signals` null (the
    worker stores the window apart); `ended_orders`: their wire form when the caller
    has it already (`ended_order_to_wire` of each, in order), else computed here."""
    return {
        "positions": {k: _position_to_wire(p) for k, p in e.positions.items()},
        "reservations": {k: _reservation_to_wire(r) for k, r in e.reservations.items()},
        "marks": {k: [m.price, m.ts] for k, m in e.marks.items()},
        "latest_ts": e.latest_ts,
        "last_fill_offset": e.last_fill_offset,
        "seen_signals": e.seen_signals.to_wire() if window else None,
        "ended_orders": [ended_order_to_wire(oid, r) for oid, r in e.ended_orders.items()]
        if ended_orders is None else ended_orders,
        "recent_opens": list(e.recent_opens),
    }


def ended_order_to_wire(order_id: str, order: Reservation) -> list[Any]:
    """One entry of the exposure's `ended_orders` list."""
    return [order_id, _reservation_to_wire(order)]


def streak_to_wire(s: Streak, *, window: bool = True) -> dict[str, Any]:
    """The `streak` table value as JSON data (`window=False`: `seen_fills` null)."""
    return {
        "equity": s.equity, "phase": s.phase, "consecutive_wins": s.consecutive_wins,
        "consecutive_losses": s.consecutive_losses, "drawdown": s.drawdown,
        "closed_trades": s.closed_trades, "wins": s.wins, "losses": s.losses,
        "gross_profit": s.gross_profit, "gross_loss": s.gross_loss,
        "seen_fills": s.seen_fills.to_wire() if window else None, "peak_equity": s.peak_equity,
        "last_loss": dict(s.last_loss), "loss_times": list(s.loss_times), "paused_until": s.paused_until,
        "emptied_drawdown": s.emptied_drawdown,
    }


def controls_to_wire(controls: Controls) -> dict[str, Any]:
    """The `controls` table value as JSON data."""
    return {
        "halt": list(controls.halt) if controls.halt is not None else None,
        "seen_commands": controls.seen_commands.to_wire(),
        "last_control_offset": controls.last_control_offset,
        "applied": [list(pair) for pair in controls.applied],
        "max_drawdown": list(controls.max_drawdown) if controls.max_drawdown is not None else None,
    }


def controls_from_wire(data: Mapping[str, Any] | None) -> Controls:
    if not data:
        return Controls()
    halt = Halt(*data["halt"]) if data["halt"] else None
    latch = Halt(*data["max_drawdown"]) if data.get("max_drawdown") else None
    if halt is not None and halt.reason == "MAX_DRAWDOWN":
        # written when the kill switch and the operator shared one halt: it is the latch
        halt, latch = None, latch or halt
    return Controls(halt, RecentIds.from_wire(data["seen_commands"]), data["last_control_offset"],
                    tuple((offset, fill) for offset, fill in data.get("applied", ())), latch)


def exposure_from_wire(data: Mapping[str, Any] | None) -> Exposure:
    if not data:
        return Exposure()
    D = Decimal
    return Exposure(
        positions=Book((k, _position_from_wire(v)) for k, v in data["positions"].items()),
        reservations=Book((k, _reservation_from_wire(v)) for k, v in data["reservations"].items()),
        marks={k: _mark_from_wire(v) for k, v in data["marks"].items()},
        latest_ts=data["latest_ts"],
        last_fill_offset=data["last_fill_offset"],
        seen_signals=RecentIds.from_wire(data["seen_signals"]),
        ended_orders={oid: as_ended(_reservation_from_wire(r)) for oid, r in data.get("ended_orders", ())},
        recent_opens=tuple(int(t) for t in data.get("recent_opens", ())),
    )


def _position_to_wire(p: Position) -> list[Any]:
    if p.legs:
        return [p.qty, p.entry_notional, p.side, p.group, dict(p.legs)]
    if p.side is None and p.group is None:
        return [p.qty, p.entry_notional]
    return [p.qty, p.entry_notional, p.side, p.group]


def _position_from_wire(data: list[Any]) -> Position:
    # [qty, entry_notional] as written before positions knew their side and group; legs
    # that hold less than qty only when there are any
    legs = {leg: Decimal(q) for leg, q in data[4].items()} if len(data) > 4 else EMPTY
    return Position(Decimal(data[0]), Decimal(data[1]), *(data[2:4] if len(data) > 2 else ()), legs=legs)


def _reservation_to_wire(r: Reservation) -> list[Any]:
    wire = [r.symbol, r.qty, r.price, r.ts, list(r.legs), dict(r.filled), sorted(r.finals), r.side, r.group,
            r.reduce]
    if r.units:
        wire.append([[kind, size] for kind, size in r.units])
    return wire


def _reservation_from_wire(data: list[Any]) -> Reservation:
    # [symbol, qty, price, ts] as written before leg fills were tracked: one whole-order leg
    symbol, qty, price, ts = data[:4]
    made = reservation(symbol, Decimal(qty), Decimal(price), int(ts), tuple(data[4]) if len(data) > 4 else ("",))
    if len(data) > 7:
        made = made._replace(side=data[7], group=data[8], reduce=bool(data[9]))
    if len(data) > 10:
        made = made._replace(units=tuple((kind, Decimal(size)) for kind, size in data[10]))
    if len(data) <= 5 or not data[5]:
        return made
    filled = {leg: Decimal(q) for leg, q in data[5].items()}
    left = made.qty - max(filled.values())
    return made._replace(filled=filled, finals=frozenset(data[6]), notional=left * made.price if left > 0 else ZERO)


def _mark_from_wire(data: Any) -> Mark:
    # a bare price as written before marks carried their event time
    return Mark(Decimal(data[0]), int(data[1])) if isinstance(data, list) else Mark(Decimal(data), 0)


def streak_from_wire(data: Mapping[str, Any] | None, config: SizingConfig, portfolio_id: str | None = None) -> Streak:
    if not data:
        return Streak(equity=(config if portfolio_id is None else config.for_portfolio(portfolio_id)).starting_equity)
    D = Decimal
    return Streak(
        equity=D(data["equity"]), phase=int(data["phase"]),
        consecutive_wins=int(data["consecutive_wins"]), consecutive_losses=int(data["consecutive_losses"]),
        drawdown=bool(data["drawdown"]), closed_trades=int(data["closed_trades"]),
        wins=int(data["wins"]), losses=int(data["losses"]),
        gross_profit=D(data["gross_profit"]), gross_loss=D(data["gross_loss"]),
        seen_fills=RecentIds.from_wire(data["seen_fills"]),
        peak_equity=D(data["peak_equity"]) if data.get("peak_equity") is not None else None,
        last_loss={k: int(v) for k, v in data.get("last_loss", {}).items()},
        loss_times=tuple(int(t) for t in data.get("loss_times", ())),
        paused_until=int(data["paused_until"]) if data.get("paused_until") is not None else None,
        emptied_drawdown=D(data["emptied_drawdown"]) if data.get("emptied_drawdown") is not None else None,
    )
