"""Offline history tools: the journal, replay, the recorded interleaving, audit, what-if, sweeps."""
