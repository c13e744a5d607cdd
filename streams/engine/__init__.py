"""The pure sizing core: plain Python over Decimal, no Kafka, Faust, clock or metrics."""

from streams.engine.pipeline import InputPosition, Result, decide, order_id_for
from streams.engine.state import PortfolioState, apply_fill

__all__ = ["InputPosition", "PortfolioState", "Result", "apply_fill", "decide", "order_id_for"]
