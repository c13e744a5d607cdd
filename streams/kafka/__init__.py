"""Kafka plumbing: connection settings, topics as code, reading and publishing, stored input positions."""
