"""The pure sizing core: plain Python over Decimal, no Kafka, Faust, clock or metrics."""

from streams.engine.pipeline import REJECTION_REASONS, InputPosition, RejectionReason, Result, decide, order_id_for
from streams.engine.state import (
    ControlApplied, ControlOutcome, FillApplied, FillOutcome, PortfolioState, apply_control, apply_fill,
)

__all__ = ["REJECTION_REASONS", "ControlApplied", "ControlOutcome", "FillApplied", "FillOutcome", "InputPosition", "PortfolioState", "RejectionReason",
           "Result", "apply_control", "apply_fill", "decide", "order_id_for"]
