"""The pure sizing core: plain Python over Decimal, no Kafka, Faust, clock or metrics."""

from streams.engine.pipeline import REJECTION_REASONS, InputPosition, RejectionReason, Result, decide, order_id_for
from streams.engine.state import FillApplied, FillOutcome, PortfolioState, apply_fill

__all__ = ["REJECTION_REASONS", "FillApplied", "FillOutcome", "InputPosition", "PortfolioState", "RejectionReason",
           "Result", "apply_fill", "decide", "order_id_for"]
