"""Where and how the worker talks to Kafka. Not part of the sizing config hash:
these settings move no number in any decision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

LOCAL_BROKER = "127.0.0.1:19092"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_bootstrap() -> str:
    """`KAFKA_BOOTSTRAP_SERVERS` when set, else the project's local broker."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or LOCAL_BROKER


class KafkaSettings(BaseSettings):
    """Connection and runtime settings, env prefix `SIZER_`."""

    model_config = SettingsConfigDict(env_prefix="SIZER_", frozen=True, extra="forbid")

    bootstrap: str = Field(default_factory=default_bootstrap)
    app_id: str = Field("sizer", min_length=1)
    topic_prefix: str = ""
    topics_file: Path = PROJECT_ROOT / "topics" / "topics.toml"
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    store: str = "rocksdb://"  # faust backs it with rocksdict (the rocksdict extra)
    data_dir: Path = Path(".sizer-data")
    web_port: int = Field(6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    standby_replicas: int = Field(0, ge=0)
    commit_interval_s: float = Field(0.5, gt=0)
    session_timeout_s: float = Field(10.0, gt=0)
    heartbeat_interval_s: float = Field(3.0, gt=0)
    metrics_portfolio_limit: int = Field(1000, ge=1)
    lag_interval_s: float = Field(5.0, gt=0)
    # at most this many inputs per fetch, handled as one batch: one lock, one state
    # write per portfolio, one wait for the sends (2,000 measured fastest in `make
    # bench`, against 500, 1,000 and 4,000)
    batch_max: int = Field(2000, ge=1)
    # how often to look for partitions whose delivery stopped short of the fetch
    stall_interval_s: float = Field(2.0, gt=0)


def load_kafka_settings(**overrides: object) -> KafkaSettings:
    """Build the settings; explicit overrides (e.g. `--bootstrap`) beat the environment."""
    values = {key: value for key, value in overrides.items() if value is not None}
    try:
        return KafkaSettings(**values)
    except ValidationError as exc:
        lines = ["invalid Kafka settings (SIZER_* environment or flags):"]
        for item in exc.errors(include_url=False):
            lines.append(f"  {'.'.join(map(str, item['loc']))}: {item['msg']}")
        raise ConfigError("\n".join(lines)) from exc
