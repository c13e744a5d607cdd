"""The wire format: messages, decimals, the admission rule, JSON Schemas."""
