"""The project's exceptions. A rejected signal is a decision, never an exception:
these are for bad configuration, unusable input files and bugs."""


class SizerError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(SizerError):
    """The configuration is unusable; the message names the field and the rule."""


# Every code an InvalidMessage (and so a dead letter) can carry.
INPUT_ERROR_CODES = ("NULL_VALUE", "INVALID_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "INVALID_FIELD",
                     "KEY_MISMATCH", "FUTURE_TIMESTAMP", "PROCESSING_ERROR")


class InvalidMessage(SizerError):
    """An input message cannot be decoded or validated.

    `code` is a bounded SCREAMING_SNAKE category (for metrics and dead letters),
    `detail` names the field and the rule."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class TopicMismatch(SizerError):
    """A topic exists on the broker with a partition count or config that differs from its spec."""
