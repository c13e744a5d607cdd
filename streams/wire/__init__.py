"""The wire format: messages, decimals, the topic roles, the admission rule, instrument records, the offline journal, JSON Schemas."""
