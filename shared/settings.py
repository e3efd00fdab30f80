"""Service configuration: the one place that reads the environment.

The entry points build one `Settings` with `load_settings()` and pass it down;
nothing else reads the process environment. Field names are the environment variable
names in lower case (`db_host` <- `DB_HOST`). The Go server's variables keep
their meaning and defaults; the rest are additions documented in the README.
"""

from __future__ import annotations

import ipaddress
import sys
from enum import StrEnum
from typing import Annotated
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_MIN_PRODUCTION_SECRET_LENGTH = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the gateway, the worker and the local stack."""

    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, env_file=None, validate_default=True
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="`production` requires a JWT_SECRET of 32+ characters and no `*` origin.",
    )

    # --- HTTP server (Go: PORT 4000)
    host: str = Field(
        "127.0.0.1", description="Interface the gateway binds; 0.0.0.0 in containers."
    )
    port: int = Field(4000, ge=1, le=65535, description="Gateway TCP port.")

    # --- PostgreSQL (Go: DB_*; DATABASE_URL wins when set)
    database_url: SecretStr | None = Field(
        None, description="postgresql://user:pass@host:port/db; when set, DB_* are ignored."
    )
    db_host: str = Field("localhost", description="PostgreSQL host.")
    db_port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port.")
    db_user: str = Field("postgres", description="PostgreSQL user.")
    db_password: SecretStr = Field(SecretStr(""), description="PostgreSQL password.")
    db_name: str = Field("chat", description="PostgreSQL database name.")
    db_ssl_mode: str = Field(
        "require",
        description="libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full.",
    )
    db_pool_min_size: int = Field(1, ge=0, description="Connections kept open per process.")
    db_pool_max_size: int = Field(10, ge=1, description="Connections at most per process.")
    db_command_timeout_seconds: float = Field(
        10.0, gt=0, description="Upper bound for one SQL statement."
    )

    # --- Redis / Valkey
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Broker URL (redis:// or rediss://)."
    )
    redis_cluster: bool = Field(
        False,
        description="true: REDIS_URL is any node (seed) of a Redis/Valkey Cluster (7+); sends"
        " publish with SPUBLISH and gateways SSUBSCRIBE on each topic's master.",
    )
    redis_key_prefix: str = Field(
        "chat",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Prefix of every Redis name, so deployments can share one server.",
    )
    redis_partitions: int = Field(
        16,
        ge=1,
        le=128,
        description="P: channels map to partition channel_id mod P. Fixed for a deployment's life.",
    )
    redis_timeout_seconds: float = Field(5.0, gt=0, description="Upper bound for one Redis call.")

    # --- Auth (Go: JWT_SECRET; 72 h tokens)
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 signing key. Required by gateways (the worker never needs it)."
    )
    jwt_secret_previous: SecretStr | None = Field(
        None,
        description="The HS256 key before a rotation: tokens it signed are still accepted"
        " (new ones are always signed with JWT_SECRET); unset: none.",
    )
    jwt_expires_hours: float = Field(72.0, gt=0, description="Token lifetime in hours.")
    ws_ticket_seconds: int = Field(
        30,
        ge=1,
        le=300,
        description="Lifetime of a single-use socket ticket (POST /api/v1/auth/ws-ticket).",
    )

    # --- Passwords and log-in limits
    password_hash_concurrency: int = Field(
        0,
        ge=0,
        le=64,
        description="Password hashes computed at once per process (each takes 19 MiB);"
        " 0: the CPUs the process may use (affinity and cgroup cpu.max), at most 4.",
    )
    login_max_failures: int = Field(
        10,
        ge=0,
        description="Failed log-ins per identity (lower-cased) per window; more get 429,"
        " even with the right password. 0 disables.",
    )
    login_max_failures_per_ip: int = Field(
        100,
        ge=0,
        description="Failed log-ins per client IP (IPv6: per /64) per window; 0 disables.",
    )
    login_failure_window_seconds: int = Field(
        900, ge=1, description="Window of the failed log-in limits, in seconds."
    )

    # --- CORS and Origin checks (Go: ALLOWED_ORIGINS)
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://localhost:4003"],
        description="Comma-separated origins for CORS and WebSocket upgrades; `*` allows any.",
    )

    # --- HTTP rate limit (Go: 10 requests per 30 s per IP)
    rate_limit_requests: int = Field(
        10, ge=0, description="Requests per window per client IP; 0 disables the limit."
    )
    rate_limit_window_seconds: int = Field(30, ge=1, description="Rate-limit window in seconds.")
    trusted_proxies: Annotated[list[Network], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated IPs/CIDRs whose X-Forwarded-For is believed.",
    )

    # --- WebSocket chat
    ws_max_body_bytes: int = Field(
        10_240, ge=64, description="Largest chat frame accepted (raw bytes); larger gets an error."
    )
    ws_max_frame_bytes: int = Field(
        65_536,
        ge=1024,
        description="Hard frame limit: larger frames close the socket (1009).",
    )
    ws_max_fragments: int = Field(
        128,
        ge=1,
        description="Most frames one fragmented WebSocket message may arrive in;"
        " more close the socket (1009).",
    )
    ws_send_queue_size: int = Field(
        1024, ge=1, description="Outbound frames queued per socket before it counts as too slow."
    )
    ws_socket_send_buffer_bytes: int = Field(
        262_144,
        ge=0,
        description="Kernel send buffer per chat socket (SO_SNDBUF), which bounds what a"
        " stalled client holds beyond its queue; 0 leaves it to the kernel.",
    )
    ws_max_sockets_per_user: int = Field(
        32,
        ge=1,
        description="Chat sockets one user may hold open on one gateway, all channels together;"
        " more are refused with too_many_sockets (4429).",
    )
    ws_max_subscriptions: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Channels one multiplexed socket (/api/v1/ws) may subscribe at once;"
        " a subscribe beyond is refused with too_many_subscriptions, the socket stays open.",
    )
    ws_typing_interval_seconds: float = Field(
        2.5,
        gt=0,
        le=60,
        description="At most one typing event per user and channel (all their sockets on all"
        " gateways together) is relayed per this interval; the ones between are dropped"
        " silently.",
    )
    ws_frame_rate_window_seconds: int = Field(
        10, ge=1, description="Window of WS_SUBSCRIBE_RATE and WS_READ_RATE, in seconds."
    )
    ws_subscribe_rate: int = Field(
        100,
        ge=0,
        description="Subscribes one multiplexed socket may send per WS_FRAME_RATE_WINDOW_SECONDS"
        " after a first burst of WS_MAX_SUBSCRIPTIONS more (each costs a PostgreSQL query and a"
        " Redis read); over it a rate_limited error frame. 0 disables.",
    )
    ws_read_rate: int = Field(
        100,
        ge=0,
        description="As WS_SUBSCRIBE_RATE, for read frames (each a PostgreSQL write); 0 disables.",
    )
    ws_heartbeat_seconds: float = Field(
        30.0, gt=0, description="Ping interval; a peer silent for this long is dropped."
    )
    ws_message_rate: int = Field(
        30, ge=0, description="Messages a user may send per channel per window; 0 disables."
    )
    ws_message_rate_window_seconds: int = Field(10, ge=1, description="Message-rate window.")
    ws_message_rate_close_after: int = Field(
        10,
        ge=0,
        description="Rate-limit refusals a socket may collect within about one window before"
        " it is closed with 4429 (the count decays at this many per window); counted apart for"
        " messages, subscribes and read frames, each over its own window. 0 never closes.",
    )
    recent_history_size: int = Field(
        1000, ge=0, description="Messages per channel kept in Redis for fast resume."
    )
    reaction_max_emojis: int = Field(
        20,
        ge=1,
        le=100,
        description="Distinct emojis one message may carry; a reaction with a further one is"
        " refused with too_many_reactions.",
    )
    reaction_max_per_user: int = Field(
        10,
        ge=1,
        le=100,
        description="Reactions one user may have on one message at once; more are refused with"
        " too_many_reactions.",
    )
    client_id_dedupe_seconds: int = Field(
        300, ge=1, description="Window in which a repeated client_id returns the original message."
    )
    ws_resume_wait_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a resume waits for messages neither in Redis nor yet in PostgreSQL.",
    )
    membership_recheck_seconds: float = Field(
        10.0,
        gt=0,
        description="How often a gateway checks in PostgreSQL that its sockets' users are still"
        " members and their tokens not revoked (also after every pub/sub reconnect); the bound"
        " on how long a socket whose removal or revocation event was missed stays open.",
    )
    ws_replay_stall_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a replay waits for a socket whose queue stays full (the client"
        " does not read) before closing it as too slow (4408).",
    )
    presence_refresh_seconds: float = Field(
        10.0,
        gt=0,
        description="How often a gateway refreshes its presence entries and sweeps expired ones"
        " (one script call per channel it serves); also the least time between two counts-only"
        " presence events of a big channel.",
    )
    presence_ttl_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a presence entry lives after its last refresh (at least twice"
        " PRESENCE_REFRESH_SECONDS): users of a gateway that died go offline within this plus"
        " one refresh interval.",
    )
    presence_max_listed: int = Field(
        100,
        ge=0,
        le=10_000,
        description="Online users a channel lists; above this many, its presence reports counts"
        " only (users null, events carry online_count).",
    )
    drain_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, seconds a gateway keeps its sockets with /readyz at 503"
        " before closing them with 1012.",
    )
    shutdown_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="After the drain delay, how long sockets and in-flight work may take"
        " before exit.",
    )

    # --- Persistence worker
    worker_batch_size: int = Field(500, ge=1, le=10_000, description="Entries per write.")
    worker_block_ms: int = Field(
        1000, ge=1, description="How long one stream read waits for new entries."
    )
    worker_linger_ms: int = Field(
        100,
        ge=0,
        description="After a read that returned less than a batch, wait this long for more"
        " entries to join it (fewer, larger writes); 0 writes at once.",
    )
    worker_claim_idle_ms: int = Field(
        30_000, ge=0, description="Pending entries idle this long are taken over from a dead peer."
    )
    worker_max_attempts: int = Field(
        5, ge=1, description="Writes of one entry before it moves to the dead-letter stream."
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the worker's /metrics (on HOST); 0 serves none.",
    )
    worker_consumer_name: str | None = Field(
        None, description="Consumer name in the group; default hostname-pid."
    )

    # --- Local stack (`chat-group up`)
    local_data_dir: str = Field(
        ".data", description="Where `chat-group up` keeps its servers' data."
    )
    local_gateways: int = Field(2, ge=1, le=32, description="Gateway processes `up` starts.")
    local_postgres_port: int = Field(54320, ge=1, le=65535, description="Port of the local PG.")
    local_redis_port: int = Field(63790, ge=1, le=65535, description="Port of the local Valkey.")

    # --- Moving from the Go server (`chat-group import-go`)
    go_database_url: SecretStr | None = Field(
        None,
        description="The Go server's database, postgresql://user:pass@host:port/db, for"
        " `chat-group import-go` when --source is not given.",
    )

    # --- Logging
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR.")
    log_json: bool = Field(True, description="One JSON object per log line.")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        items = _split_csv(value)
        if isinstance(items, list):
            return [ipaddress.ip_network(str(item), strict=False) for item in items]
        return items

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        production = self.environment is Environment.PRODUCTION
        for name, value in (
            ("JWT_SECRET", self.jwt_secret),
            ("JWT_SECRET_PREVIOUS", self.jwt_secret_previous),
        ):
            secret = None if value is None else value.get_secret_value()
            if production and secret is not None and len(secret) < _MIN_PRODUCTION_SECRET_LENGTH:
                raise ValueError(
                    f"{name} must be at least {_MIN_PRODUCTION_SECRET_LENGTH} characters"
                    " in production"
                )
            if secret == "":
                raise ValueError(f"{name} must not be empty")
        if production and "*" in self.allowed_origins:
            raise ValueError("ALLOWED_ORIGINS may not be * in production")
        if self.presence_ttl_seconds < 2 * self.presence_refresh_seconds:
            # One late refresh must not let a live user's entry expire.
            raise ValueError("PRESENCE_TTL_SECONDS must be at least twice PRESENCE_REFRESH_SECONDS")
        return self

    def signing_key(self) -> str:
        """The JWT key; entry points that sign or verify tokens require it at start."""
        if self.jwt_secret is None:
            raise ValueError("JWT_SECRET is not set")
        return self.jwt_secret.get_secret_value()

    def verification_keys(self) -> list[str]:
        """The keys a token may be signed with: JWT_SECRET, then JWT_SECRET_PREVIOUS if set."""
        keys = [self.signing_key()]
        if self.jwt_secret_previous is not None:
            keys.append(self.jwt_secret_previous.get_secret_value())
        return keys

    def postgres_dsn(self) -> str:
        """The DSN to connect with: DATABASE_URL if set, else built from DB_*."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        password = quote(self.db_password.get_secret_value(), safe="")
        auth = f"{quote(self.db_user, safe='')}:{password}" if password else quote(self.db_user)
        return (
            f"postgresql://{auth}@{self.db_host}:{self.db_port}/{quote(self.db_name)}"
            f"?sslmode={self.db_ssl_mode}"
        )

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins


def load_settings(*, require_jwt_secret: bool = False, **overrides: object) -> Settings:
    """Build settings from the environment; on a bad value print one line and exit 2.

    The line names the variable (e.g. `JWT_SECRET: required`), never a traceback.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            location = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            message = error["msg"].removeprefix("Value error, ")
            print(f"configuration error: {location}: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if require_jwt_secret and settings.jwt_secret is None:
        print("configuration error: JWT_SECRET: required", file=sys.stderr)
        raise SystemExit(2)
    return settings
