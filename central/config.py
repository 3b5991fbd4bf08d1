"""Central's configuration: broker, storage URL, shared-subscription group and batching."""

from __future__ import annotations

from pantau.agent.wire.paths import central_database
from pantau.agent.wire.protocol import segment_validator
from pantau.agent.wire.settings import BrokerSettings, PantauSettings, Section
from pydantic import Field, field_validator


class DeadLetterSettings(Section):
    max_days: float = Field(30, gt=0, description="Dead letters older than this are dropped.")
    max_rows: int = Field(
        100_000, ge=1, description="Most dead letters kept; the oldest are dropped first."
    )


class CentralBrokerSettings(BrokerSettings):
    session_expiry: int = Field(
        600,
        ge=0,
        description="Seconds the broker keeps a worker's session (and its share of the queue) "
        "while the worker is away. Short, so a worker that never returns stops holding its "
        "share: agents send again what no live worker stored (end-to-end acks).",
    )


class CentralSettings(PantauSettings):
    broker: CentralBrokerSettings = Field(default_factory=CentralBrokerSettings)
    storage: str = Field(
        default_factory=lambda: f"sqlite:///{central_database()}",
        description="Where messages are stored: sqlite:////abs/path (or sqlite:///relative/path). "
        "Default central.db under Pantau's state root: $PANTAU_HOME, else /var/lib/pantau for a "
        "service, else ~/.local/share/pantau.",
    )
    group: str = Field(
        "central",
        description="Shared-subscription group: central workers in one group split the load.",
    )
    worker: str = Field("1", description="This worker's name within the group.")
    heartbeat_timeout: float = Field(
        90, gt=0, description="Seconds without a heartbeat after which an agent counts as stale."
    )
    batch_size: int = Field(500, ge=1, description="Most messages stored in one transaction.")
    batch_wait_ms: int = Field(
        50, ge=0, description="Longest wait to fill a batch before it is committed."
    )
    receive_maximum: int = Field(
        2000, ge=1, le=65535, description="Unacknowledged messages the broker may send us."
    )
    seq_window: int = Field(
        10_000,
        ge=1,
        description="How far ahead of the highest seq an agent has sent so far a message may "
        "claim to be, plus max_seq_rate for every second the agent was silent; further ahead "
        "it is dead-lettered ('seq far ahead').",
    )
    max_seq_rate: float = Field(
        50,
        ge=0,
        description="Most seqs per second an agent can assign while central does not hear from "
        "it (32 cameras with 10 s buckets assign about 7): what a long outage may legitimately "
        "add to seq_window.",
    )
    max_bucket_age_days: float = Field(
        400, gt=0, description="Counts buckets older than this when received are dead-lettered."
    )
    max_clock_skew_seconds: float = Field(
        600,
        ge=0,
        description="Counts buckets that end more than this after they were received are "
        "dead-lettered.",
    )
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    tail_gap_after: float = Field(
        600,
        gt=0,
        description="Seconds after an agent's heartbeat said it had sent a seq at which the "
        "seqs up to it that never arrived show as an open gap (a loss at the tail of its seqs).",
    )

    _check_names = field_validator("group", "worker")(segment_validator("name"))

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported (postgresql:// is planned)")
        if len(value) == len("sqlite:///"):
            raise ValueError("sqlite:/// needs a file path after it")
        return value
