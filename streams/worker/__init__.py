"""The Faust stream processor: thin agents around the pure engine."""
