"""Kafka and operations: client settings, topics and ACLs as code, reading and publishing, operator controls, the console."""
