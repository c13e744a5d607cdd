"""The topic roles (DESIGN.md, "Topics"): the one table that says, for each role,
its message, the field its records are keyed by, and how the worker treats it.
Everything that needs a role's message, key or kind reads it here; the role's
topic name, partitions and retention are in `topics/topics.toml` (`kafka.topics`).

The table's order is the order roles are listed everywhere (topic creation,
error messages): the inputs first, instruments before the signals that need
them, then what the worker writes: its decisions, the orders of the accepted
ones, dead letters; last the effective configurations and the registered
portfolios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from streams.wire.models import Control, Decision, Fill, Instrument, Order, Signal


@dataclass(frozen=True, slots=True)
class Role:
    """One topic role.

    `model`: the message type of its records (a discriminated union for fills and
    controls; None for the dead-letter topic, whose records carry the original
    bytes, and for the config topic, whose records are the effective configuration).
    `key_field`: the message field its records are keyed by, or None.
    `input`: read by the worker, under the admission rule (`wire.admission`).
    `positioned`: an input whose offsets the worker stores itself (its commits and
    input-positions table); a recreated one starts its offsets again from 0.
    `timed`: its messages carry an event time (`ts`), checked against the record's.
    `output`: written by the worker (one record per input at most), and tailed by `sizer tail`.
    `compacted`: its topic must be compacted (one record per key is the state).
    """

    name: str
    model: Any
    key_field: str | None
    input: bool = False
    positioned: bool = False
    timed: bool = False
    output: bool = False
    compacted: bool = False


TABLE: dict[str, Role] = {role.name: role for role in (
    Role("instruments", Instrument, "symbol", input=True, compacted=True),
    Role("signals", Signal, "portfolio_id", input=True, positioned=True, timed=True),
    Role("fills", Fill, "portfolio_id", input=True, positioned=True, timed=True),
    Role("controls", Control, "portfolio_id", input=True, positioned=True, timed=True),
    Role("decisions", Decision, "portfolio_id", output=True),
    Role("orders", Order, "portfolio_id", output=True),
    Role("dlq", None, None, output=True),
    Role("config", None, "config_hash", compacted=True),
    # the registered portfolios (`worker.registry`): written by operators, read whole by every worker
    Role("portfolios", None, "portfolio_id", compacted=True),
)}

ROLES: tuple[str, ...] = tuple(TABLE)
# role -> (the message model, the field the record must be keyed by)
INPUTS: dict[str, tuple[Any, str]] = {role.name: (role.model, role.key_field) for role in TABLE.values() if role.input}
TIMED: frozenset[str] = frozenset(role.name for role in TABLE.values() if role.timed)
POSITIONED: tuple[str, ...] = tuple(role.name for role in TABLE.values() if role.positioned)
# the roles the worker writes, in the order `sizer tail` offers them
OUTPUTS: tuple[str, ...] = tuple(role.name for role in TABLE.values() if role.output)
COMPACTED: tuple[str, ...] = tuple(role.name for role in TABLE.values() if role.compacted)
# the roles of a portfolio's records besides its signals: their topics must have as
# many partitions as the signals topic, so that one portfolio stays on one partition
CO_PARTITIONED: tuple[str, ...] = tuple(role.name for role in TABLE.values()
                                        if role.key_field == "portfolio_id" and role.name != "signals"
                                        and not role.compacted)
# role -> the field its messages are keyed by, for every role that has one
KEY_FIELD: dict[str, str] = {role.name: role.key_field for role in TABLE.values() if role.key_field is not None}


def message_types(role: str) -> tuple[str, ...]:
    """The `type` values of a role whose model is a union discriminated by `type`
    (fills: order_filled, order_canceled, position_closed; controls: halt, resume,
    release, adjust_equity, reset_clock), in the model's order. KeyError for an
    unknown role, ValueError for a role whose messages have no `type`."""
    union = get_args(TABLE[role].model)
    if not union:
        raise ValueError(f"{role}: its messages are not a union discriminated by type")
    return tuple(get_args(member.model_fields["type"].annotation)[0] for member in get_args(union[0]))
