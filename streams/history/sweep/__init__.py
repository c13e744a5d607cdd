"""`sizer sweep`: many configurations over the same history, with PnL at the
what-if size (DESIGN.md, "Audit and replay").

The history is either an offline journal (its decisions are re-made under the
configuration the journal was recorded with) or Kafka topic history in the
interleaving the worker recorded (`history.recorded_interleaving`). It is turned
once into a list of events; every configuration then runs the engine over the
same events in worker processes, except one that differs from a configuration
already run only in settings that run never read: it takes that run's figures
(`same_run`).

The PnL model. Each what-if order's fills are the recorded fills of the same
order (order ids are derived from portfolio and signal, so they are shared)
scaled by what-if qty / recorded qty; an order the what-if rejected gets no
fills, and an order the what-if accepted but the recording did not has no fills
to scale: its reservation is released at once and it is counted as `unfilled`.
A `position_closed` names a symbol, not an order: its quantity and realized PnL
are scaled by the what-if position's share of the recorded position in that
symbol just before the close (the recorded position is replayed alongside from
the recorded orders and fills). A fill of an order the history has no decision
for, or a close with no recorded position, is not tied to any signal of the
history and is applied as recorded. Everything scaled feeds the what-if state:
streaks, equity, phases, percentage caps and drawdown mode follow the policy's
own PnL. No market impact; fills at the recorded prices. Operator commands
(a journal's, or Kafka history's `controls` in the recorded interleaving) apply
to every configuration as recorded.

Money is Decimal throughout; scaled quantities and PnL are rounded half-even
to 1e-18 (the wire's finest place).

The package, in the order a sweep uses it: `events` (the history as events),
`grid` (the configurations), `simulation` (one configuration over the events),
`figures` (its metrics and curves), `runner` (every configuration, in processes).
"""

from streams.history.sweep.events import (
    CANCEL, CLOSE, CONTROL, FILL, PARALLEL_READ_MIN_INPUTS, SIGNAL, History, RecordedPositions, from_journal, from_kafka,
)
from streams.history.sweep.figures import curves, metrics
from streams.history.sweep.grid import POLICIES, Configuration, configurations, parse_grid, policy_config, with_values
from streams.history.sweep.runner import Outcome, SettingsRead, dispatch_order, same_run, sweep
from streams.history.sweep.simulation import Run, simulate

__all__ = [
    "CANCEL", "CLOSE", "CONTROL", "FILL", "PARALLEL_READ_MIN_INPUTS", "SIGNAL", "History", "RecordedPositions",
    "from_journal", "from_kafka", "curves", "metrics", "POLICIES", "Configuration", "configurations", "parse_grid",
    "policy_config", "with_values", "Outcome", "SettingsRead", "dispatch_order", "same_run", "sweep", "Run", "simulate",
]
