"""Offline history tools: replay, the recorded interleaving, audit, what-if, sweeps."""
