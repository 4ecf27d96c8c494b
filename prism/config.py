"""Settings of Prism: every one is a ``PRISM_*`` environment variable (or a line of ``.env``).

Nested sections use ``__`` in their variable names only where a section is named; the common
settings are flat so that the README's table stays short.

Long because: one flat class is the one place every setting is declared, validated and
documented (``prism config docs`` writes docs/configuration.md from it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class AnalyzerName(StrEnum):
    RULES = "rules"
    BEDROCK = "bedrock"


class SearchFallback(StrEnum):
    NONE = "none"
    POSTGRES = "postgres"


class KafkaSecurity(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Settings(BaseSettings):
    """All of Prism's configuration. Build it once at start-up and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="PRISM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    mode: Mode = Field(
        Mode.DEVELOPMENT,
        description="development serves GraphiQL and introspection; production turns both off.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server binds to.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for `prism serve`.")
    data_dir: Path = Field(
        Path("var"),
        description="Local state: embedded PostgreSQL data, local object storage, generated keys.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="postgresql:// URL of an existing PostgreSQL >= 15; unset starts the "
        "embedded PostgreSQL under PRISM_DATA_DIR/pg.",
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="Connections each process keeps open to PostgreSQL."
    )
    database_max_overflow: int = Field(
        10, ge=0, le=200, description="Extra connections a process may open under bursts."
    )
    database_statement_timeout_ms: int = Field(
        15_000, ge=0, description="Server-side cap on one SQL statement (0 disables)."
    )
    database_pool_timeout_seconds: float = Field(
        5,
        gt=0,
        description="Longest wait for a pooled connection before answering SERVICE_UNAVAILABLE.",
    )
    database_connect_timeout_seconds: float = Field(
        5, gt=0, description="Longest wait for a new connection to PostgreSQL."
    )
    database_command_timeout_seconds: float = Field(
        20,
        ge=0,
        description="Client-side cap on one SQL statement or COMMIT, for a server that does not "
        "answer at all; keep it above the statement timeout (0 disables).",
    )
    request_timeout_seconds: float = Field(
        30,
        ge=0,
        description="Deadline of one HTTP request (uploads included): past it the answer is 503 "
        "SERVICE_UNAVAILABLE, or OUTCOME_UNKNOWN for a mutation caught committing (0 disables).",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HMAC key for access tokens; unset generates one in PRISM_DATA_DIR/jwt.key "
        "(development only: production refuses to start without it).",
    )
    jwt_key_id: str = Field("k1", description="`kid` header of issued access tokens.")
    access_token_ttl_seconds: int = Field(
        900, ge=60, le=86_400, description="Lifetime of a JWT access token."
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400, ge=3_600, description="Lifetime of a refresh token (rotated on each use)."
    )
    websocket_recheck_seconds: float = Field(
        5,
        gt=0,
        le=300,
        description="How often an open WebSocket's credential is checked again: a revoked "
        "token, a signed-out session or an expired JWT closes it (4401).",
    )
    websocket_max_sockets_per_credential: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Open WebSockets one credential (an API token, or a user's sessions) may "
        "hold on one server process; one more is closed with 4429 after connection_init.",
    )
    encryption_key: SecretStr | None = Field(
        None,
        description="64 hex characters: the AES-256 key of secrets at rest (MFA secrets); unset "
        "uses PRISM_DATA_DIR/encryption.key, created once with 0600 permissions.",
    )
    encryption_retired_keys: SecretStr | None = Field(
        None,
        description="Comma-separated retired keys (hex) that still open older values after "
        "a rotation.",
    )
    kms_key_id: str | None = Field(
        None,
        description="AWS KMS key (id, ARN or alias) that wraps organizations' data keys; unset: "
        "the local keyring (PRISM_ENCRYPTION_KEY, or PRISM_DATA_DIR/keyring.json).",
    )
    kms_region: str = Field("us-east-1", description="AWS region of PRISM_KMS_KEY_ID.")
    kms_endpoint_url: str | None = Field(
        None, description="Endpoint of a KMS-compatible service; unset: AWS."
    )
    export_link_ttl_seconds: int = Field(
        86_400,
        ge=60,
        le=30 * 86_400,
        description="How long a personal-data export's download link works.",
    )
    password_hash_time_cost: int = Field(
        3, ge=1, le=20, description="argon2id passes; raise it on fast CPUs."
    )
    password_hash_memory_kib: int = Field(
        65_536, ge=1_024, description="argon2id memory per hash in KiB (64 MiB by default)."
    )
    password_hash_parallelism: int = Field(4, ge=1, le=16, description="argon2id lanes.")
    password_reset_minutes: int = Field(
        30,
        ge=5,
        le=24 * 60,
        description="How long a password reset token (`requestPasswordReset`) works (once).",
    )
    password_reset_url: str | None = Field(
        None,
        description="Link of the web front end's reset page, with `{token}` where the token "
        "goes (`https://app.example.com/reset?token={token}`); unset: the e-mail carries the "
        "token and says to call `resetPassword`.",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="Where e-mail goes: `smtps://user:pass@host:465` (TLS from the start) or "
        "`smtp://user:pass@host:587` (STARTTLS, required); `smtp+insecure://127.0.0.1:25` only "
        "for a relay on this machine, without TLS. Unset: development writes each message to "
        "the log instead; production sends none and logs that mail is not configured.",
    )
    smtp_ca_file: Path | None = Field(
        None,
        description="PEM file of the certificate authorities the SMTP server's certificate is "
        "checked against (a private CA); unset: the system's.",
    )
    smtp_timeout_seconds: float = Field(
        30,
        gt=0,
        le=300,
        description="Longest an e-mail may take to compose and send, off the request path; "
        "past it the message is given up and logged.",
    )
    mail_from: str = Field(
        "Prism <prism@localhost>",
        description="From address of Prism's e-mail (`Name <address>` or an address).",
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest accepted upload (PAYLOAD_TOO_LARGE above)."
    )
    s3_bucket: str | None = Field(
        None,
        description="S3 bucket for document files; unset stores them under PRISM_DATA_DIR/objects.",
    )
    s3_prefix: str = Field("prism/", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (MinIO, Ceph, ...); unset: AWS."
    )
    s3_region: str = Field("us-east-1", description="Region of the bucket.")
    s3_sse: str | None = Field(
        None, description="Server-side encryption: AES256 or aws:kms (unset: the bucket default)."
    )
    s3_storage_class: str = Field("STANDARD", description="Storage class of new objects.")
    analyzer: AnalyzerName = Field(
        AnalyzerName.RULES, description="rules (built in, free) or bedrock (AWS Bedrock Runtime)."
    )
    bedrock_model_id: str = Field(
        "anthropic.claude-3-5-haiku-20241022-v1:0", description="Bedrock model for analysis."
    )
    bedrock_region: str = Field("us-east-1", description="AWS region of Bedrock Runtime.")
    bedrock_input_price_per_1k: float = Field(
        0.0008, ge=0, description="USD per 1,000 input tokens of the Bedrock model."
    )
    bedrock_output_price_per_1k: float = Field(
        0.004, ge=0, description="USD per 1,000 output tokens of the Bedrock model."
    )
    bedrock_timeout_seconds: float = Field(
        60, gt=0, description="Read timeout of one Bedrock call."
    )
    bedrock_max_attempts: int = Field(
        6, ge=1, le=20, description="Attempts per Bedrock call, throttling retries included."
    )
    worker_concurrency: int = Field(2, ge=1, le=64, description="Jobs one worker runs at once.")
    job_lease_seconds: int = Field(
        60,
        ge=5,
        description="A claimed job is reclaimed when its worker stops renewing for this long.",
    )
    job_max_attempts: int = Field(5, ge=1, le=50, description="Attempts before a job is DEAD.")
    bi_refresh_seconds: float = Field(
        5,
        gt=0,
        le=3600,
        description="How often workers queue refreshes of stale BI rollups (their staleness).",
    )
    extract_timeout_seconds: float = Field(
        60, gt=0, description="Wall-clock limit of one extraction (a child process is killed)."
    )
    extract_memory_mb: int = Field(
        768, ge=128, description="Address-space limit of the extraction child process."
    )
    max_pages: int = Field(2000, ge=1, description="PDFs with more pages are refused.")
    max_image_pixels: int = Field(
        50_000_000,
        ge=1_000_000,
        le=500_000_000,
        description="Largest image (width × height) accepted, and rendered for OCR or a "
        "preview; larger ones (decompression bombs) are refused.",
    )
    ocr_languages: str = Field(
        "eng+deu+fra",
        pattern=r"^[a-z_]{3,20}(\+[a-z_]{3,20}){0,9}$",
        description="Tesseract languages scans are read in (installed `tesseract-ocr-*` "
        "packages), joined with `+`.",
    )
    ocr_max_pages: int = Field(
        100,
        ge=1,
        le=5_000,
        description="Most scanned pages (of a PDF, or a TIFF's pages) read by OCR in one "
        "document; documents with more are refused.",
    )
    ocr_timeout_seconds: float = Field(
        300, gt=0, description="Wall-clock limit of one document's OCR, beside the extraction's."
    )
    ocr_dpi: int = Field(
        300, ge=72, le=600, description="Resolution scanned PDF pages are rendered at for OCR."
    )
    preview_width: int = Field(
        1000, ge=100, le=4000, description="Width in pixels of page previews (PNG)."
    )
    preview_max_pages: int = Field(
        50, ge=1, le=5_000, description="Pages of a document that have previews (the first ones)."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="redis:// URL for the response cache, persisted queries and rate limits; "
        "unset keeps them in each process's memory.",
    )
    response_cache_ttl_seconds: int = Field(
        60, ge=0, le=86_400, description="Life of a cached answer to a registered query (0: off)."
    )
    apq_ttl_seconds: int = Field(
        7 * 86_400, ge=60, description="How long an automatic persisted query is remembered."
    )
    registered_operations_only: bool = Field(
        False, description="Run registered operations only, for every caller (a safelist)."
    )
    max_query_cost: int = Field(
        50_000, ge=1, description="Largest estimated answer (objects) a request may ask for."
    )
    max_root_fields: int = Field(20, ge=1, description="Most root fields in one operation.")
    max_query_tokens: int = Field(5_000, ge=100, description="Most tokens in one document.")
    max_query_selections: int = Field(
        5_000,
        ge=100,
        description="Most selections in one document once its fragments are expanded.",
    )
    rate_limit_capacity: int = Field(
        100_000,
        ge=1,
        description="Cost a caller (API token, user, or IP when anonymous) may spend at once.",
    )
    rate_limit_refill_per_second: float = Field(
        1_000, gt=0, description="Cost a caller's allowance regains per second."
    )
    rate_limit_refusal_cost: int = Field(
        1,
        ge=0,
        description=(
            "What a request refused before it runs (unparsable, invalid, too complex, an "
            "unknown persisted query, a malformed HTTP request, a bad bearer token) costs its "
            "caller."
        ),
    )
    auth_cache_seconds: float = Field(
        10,
        ge=0,
        le=300,
        description=(
            "How long a verified bearer credential (API token, sign-in session) is remembered "
            "by a process (0: checked in the database on every request). A revocation, "
            "sign-out or change of rights is heard at once through LISTEN/NOTIFY; while that "
            "connection is down every request is checked in the database."
        ),
    )
    compiled_operations: bool = Field(
        True,
        description="Answer registered queries with one planned SQL statement where possible.",
    )
    lean_path: bool = Field(
        True,
        description=(
            "Answer planned read queries over HTTP without Strawberry's request pipeline "
            "(the same checks, answer and headers; anything else takes the full path)."
        ),
    )
    introspection: bool | None = Field(
        None, description="Serve introspection (default: in development mode only)."
    )
    graphiql: bool | None = Field(
        None, description="Serve GraphiQL at /graphql (default: in development mode only)."
    )
    opensearch_url: SecretStr | None = Field(
        None,
        description="URL of an OpenSearch cluster (https://user:pass@host:9200) for search; "
        "unset searches with PostgreSQL full-text search.",
    )
    opensearch_index: str = Field(
        "prism-sections",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,80}$",
        description="Alias searched and written; a reindex builds ALIAS-<timestamp> behind it.",
    )
    opensearch_shards: int = Field(1, ge=1, le=64, description="Primary shards of a new index.")
    opensearch_replicas: int = Field(
        1, ge=0, le=8, description="Replicas of a new index (0 on a single node)."
    )
    opensearch_timeout_seconds: float = Field(
        10, gt=0, description="Timeout of one OpenSearch request."
    )
    search_fallback: SearchFallback = Field(
        SearchFallback.NONE,
        description="none: `search` answers SERVICE_UNAVAILABLE while OpenSearch is down; "
        "postgres: it answers from PostgreSQL and says so in `extensions.search`.",
    )
    search_index_max_attempts: int = Field(
        1000,
        ge=1,
        description="Attempts of one index job (10 min apart at most: 1000 is about a week of "
        "OpenSearch outage) before it is DEAD and needs `prism search reindex`.",
    )
    lifecycle_interval_hours: float = Field(
        24,
        ge=0,
        description="How often workers run the lifecycle and data-quality jobs of each "
        "organization (0: never; `prism lifecycle run` still works).",
    )
    analysis_sla_seconds: float = Field(
        300, gt=0, description="An analysis slower than this fails the timeliness check."
    )
    pg_bin_dir: Path | None = Field(
        None,
        description="Directory of pg_dump and pg_restore for backups; unset: the embedded "
        "PostgreSQL's, else PATH.",
    )
    backup_url: str | None = Field(
        None,
        description="Where backups are written, apart from the data: `s3://bucket/prefix` (a "
        "bucket of its own; `?endpoint=URL&region=R` to reach it elsewhere than "
        "PRISM_S3_ENDPOINT_URL/PRISM_S3_REGION) or a directory (`/path` or `file:///path`); "
        "unset: PRISM_DATA_DIR/backups.",
    )
    backup_interval_hours: float = Field(
        0,
        ge=0,
        description="How often workers make an encrypted backup of the database and the object "
        "store to PRISM_BACKUP_URL (one worker of the fleet makes each; 0: never; `prism "
        "backup create` still works).",
    )
    backup_keep: int = Field(
        7,
        ge=1,
        le=10_000,
        description="Complete backups kept at PRISM_BACKUP_URL; older ones are removed after "
        "each new backup.",
    )
    lake_interval_hours: float = Field(
        0,
        ge=0,
        description="How often workers export the lake and remove its expired partitions (one "
        "worker of the fleet runs each export; 0: never; `prism lake export` still works).",
    )
    lake_bronze_days: int = Field(
        90,
        ge=1,
        description="Days a bronze (raw, unmasked) lake partition is kept, by its day.",
    )
    lake_silver_days: int = Field(
        730,
        ge=1,
        description="Days a silver (cleaned, PII-masked) lake partition is kept, by its day.",
    )
    lake_gold_days: int = Field(
        2555,
        ge=1,
        description="Days a gold (daily aggregates) lake partition is kept, by its day.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For is believed (the client is the rightmost hop not in the list); empty: "
        "none, the TCP peer is the client.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins (`https://app.example.com`) whose browser pages "
        "may call the API (CORS); `*`: any origin (no cookies are ever involved: callers send "
        "bearer tokens); empty: none, browsers allow only same-origin pages.",
    )
    cors_max_age_seconds: int = Field(
        600, ge=0, le=86_400, description="How long browsers may cache a CORS preflight's answer."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that /metrics on the public port asks for (or "
        "`sha256:<hex>`, its digest); unset: /metrics is public in development only.",
    )
    metrics_address: str | None = Field(
        None,
        description="host:port of a separate listener that serves /metrics alone (an internal "
        "network); the public port then serves it only with PRISM_METRICS_TOKEN.",
    )
    worker_metrics_address: str | None = Field(
        None,
        description="host:port where `prism worker` serves /metrics (job runs and durations, "
        "extraction, analysis, AI cost, the queue); unset: it serves none (with "
        "PROMETHEUS_MULTIPROC_DIR shared with `prism serve` on one host, the API's scrape "
        "includes the worker's figures).",
    )
    kafka_bootstrap: str | None = Field(
        None,
        description="Comma-separated host:port of Kafka brokers the outbox relay publishes "
        "events to (`prism events relay`; `prism worker` runs the relay when this is set).",
    )
    kafka_topic_prefix: str = Field(
        "",
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix of the topics document-events, user-interactions and "
        "system-metrics (e.g. `prism.`).",
    )
    kafka_security_protocol: KafkaSecurity = Field(
        KafkaSecurity.PLAINTEXT,
        description="How the relay reaches the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or "
        "SASL_SSL (TLS with the system's trust store unless PRISM_KAFKA_SSL_CAFILE).",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        KafkaSaslMechanism.PLAIN,
        description="SASL mechanism with a SASL_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: SecretStr | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signs the brokers' certificates."
    )
    kafka_timeout_seconds: float = Field(
        30,
        gt=0,
        le=600,
        description="How long the relay waits for the brokers to acknowledge a batch before "
        "it sends the batch again (with backoff).",
    )
    events_relay: bool | None = Field(
        None,
        description="Run the outbox relay in `prism worker` (unset: when PRISM_KAFKA_BOOTSTRAP "
        "is set).",
    )
    events_batch_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Events the relay publishes per batch (the most a killed relay re-sends).",
    )
    events_poll_seconds: float = Field(
        2,
        gt=0,
        le=300,
        description="How often an idle relay looks for events (it also wakes on NOTIFY).",
    )
    events_snapshot_seconds: float = Field(
        60,
        ge=0,
        description="How often the relay writes each active organization's metrics snapshot "
        "(queue depth, processing times, AI cost) to system-metrics (0: never).",
    )
    events_subscription_buffer: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Events a live `events` subscription may fall behind the outbox before it "
        "is ended with SUBSCRIBER_TOO_SLOW (a slow client resumes with `after`).",
    )
    outbox_retention_hours: float = Field(
        168,
        gt=0,
        description="Published events are deleted from the outbox after this; events a "
        "registered consumer has not yet published are kept.",
    )
    webhooks_dispatch: bool = Field(
        True,
        description="Run the webhook dispatcher in `prism worker` (it also runs alone as "
        "`prism events webhooks`); any number may run.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach private, loopback, link-local, shared and reserved "
        "addresses (IPv4 and IPv6, IPv4-mapped included); multicast, broadcast and unspecified "
        "addresses are always refused. For development and tests only.",
    )
    webhook_allow_http: bool = Field(
        False, description="Let webhooks use http:// URLs (https:// is required otherwise)."
    )
    webhook_timeout_seconds: float = Field(
        10,
        gt=0,
        le=60,
        description="The most a webhook delivery takes: connecting, sending, and reading the "
        "answer (redirects are never followed).",
    )
    webhook_max_response_bytes: int = Field(
        65_536,
        ge=0,
        le=10_485_760,
        description="The most of a webhook endpoint's answer read (the rest is not).",
    )
    webhook_retry_first_seconds: float = Field(
        10,
        gt=0,
        le=3600,
        description="The delay before a failed webhook delivery's first retry; each next one "
        "doubles (with jitter), at most PRISM_WEBHOOK_RETRY_MAX_INTERVAL_SECONDS.",
    )
    webhook_retry_max_interval_seconds: float = Field(
        21_600,
        gt=0,
        description="The longest delay between two attempts of a webhook delivery.",
    )
    webhook_retry_hours: float = Field(
        26,
        gt=0,
        description="How long a webhook delivery is retried after its first attempt (the "
        "last retry is at the end of this window).",
    )
    webhook_disable_after_hours: float = Field(
        120,
        gt=0,
        description="A webhook endpoint whose attempts have all failed for this long is "
        "disabled (event prism.webhook.disabled) until an ADMIN enables it.",
    )
    webhook_delivery_retention_days: float = Field(
        30,
        gt=0,
        description="Finished webhook delivery attempts are deleted after this.",
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs on stderr.")
    log_json: bool = Field(True, description="JSON logs (false: human-readable console logs).")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for item in cors_origins(value):
            if item == "*":
                continue
            parsed = urlsplit(item)
            try:
                parsed.port  # noqa: B018 - a port out of range raises
            except ValueError:
                parsed = parsed._replace(netloc="")
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.hostname
                or parsed.path
                or parsed.query
                or parsed.fragment
                or parsed.username is not None
            ):
                raise ValueError(
                    f"PRISM_CORS_ORIGINS: {item!r} is not an origin (scheme://host[:port])"
                )
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_is_one_of_three(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            smtp_endpoint(value.get_secret_value())  # ValueError says what is wrong
        return value

    @field_validator("backup_url")
    @classmethod
    def _backup_url_is_a_bucket_or_a_directory(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme == "s3" and not parsed.netloc:
                raise ValueError("PRISM_BACKUP_URL: an s3:// URL names its bucket")
            if parsed.scheme not in ("s3", "file", ""):
                raise ValueError(
                    "PRISM_BACKUP_URL is s3://bucket/prefix, file:///path or a directory"
                )
        return value

    @field_validator("password_reset_url")
    @classmethod
    def _reset_url_has_a_token(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value.replace("{token}", "t"))
            if "{token}" not in value or parsed.scheme not in ("http", "https"):
                raise ValueError("PRISM_PASSWORD_RESET_URL is an http(s) URL with {token} in it")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        _name, address = parseaddr(value)
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError("PRISM_MAIL_FROM is an e-mail address (`Name <address>`)")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _token_digest_is_sha256(cls, value: SecretStr | None) -> SecretStr | None:
        secret = value.get_secret_value() if value else ""
        if value is not None and not secret.strip():
            raise ValueError("PRISM_METRICS_TOKEN is empty: unset it or give a token")
        if secret.startswith("sha256:"):
            if len(bytes.fromhex(secret[7:])) != 32:
                raise ValueError("sha256: needs 64 hex characters")
        elif value is not None and len(secret) < 16:
            raise ValueError("PRISM_METRICS_TOKEN needs at least 16 characters")
        return value

    @field_validator("metrics_address", "worker_metrics_address")
    @classmethod
    def _address_has_a_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"PRISM_{(info.field_name or '').upper()} is host:port")
        return value

    @property
    def allowed_origins(self) -> list[str]:
        return cors_origins(self.cors_origins)

    @property
    def runs_relay(self) -> bool:
        return bool(self.kafka_bootstrap) if self.events_relay is None else self.events_relay

    @property
    def production(self) -> bool:
        return self.mode is Mode.PRODUCTION

    @property
    def serves_introspection(self) -> bool:
        return not self.production if self.introspection is None else self.introspection

    @property
    def serves_graphiql(self) -> bool:
        return not self.production if self.graphiql is None else self.graphiql


@dataclass(frozen=True)
class SmtpEndpoint:
    """A PRISM_SMTP_URL taken apart."""

    host: str
    port: int
    # "tls": TLS from the first byte; "starttls": STARTTLS, required; "none": a local relay.
    security: str
    username: str | None
    password: str | None


_SMTP_SCHEMES = {"smtps": ("tls", 465), "smtp": ("starttls", 587), "smtp+insecure": ("none", 25)}


def smtp_endpoint(url: str) -> SmtpEndpoint:
    """Host, port, TLS and credentials of an SMTP URL; ValueError for anything else (the
    message never repeats the URL: it may hold a password)."""
    parsed = urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in _SMTP_SCHEMES:
        raise ValueError("PRISM_SMTP_URL is smtps://, smtp:// (STARTTLS) or smtp+insecure://")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError("PRISM_SMTP_URL has a port out of range") from None
    host = parsed.hostname
    if not host or parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ValueError("PRISM_SMTP_URL is scheme://[user:password@]host[:port]")
    security, default_port = _SMTP_SCHEMES[scheme]
    if security == "none" and not _loopback(host):
        raise ValueError(
            "smtp+insecure:// sends mail (and any password) in the clear: only to a relay on "
            "this machine (localhost, 127.0.0.0/8, ::1); use smtps:// or smtp:// (STARTTLS)"
        )
    return SmtpEndpoint(
        host=host,
        port=port or default_port,
        security=security,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password is not None else None,
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cors_origins(value: str) -> list[str]:
    """The origins of a PRISM_CORS_ORIGINS value, as browsers send them (no trailing slash,
    scheme and host in lower case)."""
    found: list[str] = []
    for part in value.split(","):
        item = part.strip().rstrip("/")
        if item and item != "*":
            scheme, sep, rest = item.partition("://")
            item = f"{scheme.lower()}{sep}{rest.lower()}"
        if item and item not in found:
            found.append(item)
    return found
