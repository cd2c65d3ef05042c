"""Settings common to every service; each service subclasses with its own env prefix.

Every value is read from ``THREADLINE_<SERVICE>_<NAME>`` first and then from ``THREADLINE_<NAME>``,
so one environment file can drive every process and still override one service.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.auth import DEV_ISSUER, IssuerConfig

Environment = Literal["development", "test", "production"]

DEV_DATABASE_URL = "postgresql+asyncpg://threadline@127.0.0.1:24320/threadline"
DEV_KAFKA = "127.0.0.1:19092"


class ServiceSettings(BaseSettings):
    """What every Threadline service process needs to run."""

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8100

    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Service prefix (``env_settings``) before the common ``THREADLINE_`` prefix."""
        common = EnvSettingsSource(settings_cls, env_prefix="THREADLINE_")
        return init_settings, env_settings, common, dotenv_settings, file_secret_settings

    environment: Environment = "development"
    database_url: str = DEV_DATABASE_URL
    kafka_bootstrap_servers: str = DEV_KAFKA
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = Field(default=1, ge=1, le=16, description="HTTP worker processes")
    log_level: str = "INFO"
    log_json: bool = True
    # Once started, move everything the process has made so far (modules, the app, metadata)
    # out of the garbage collector's sight (gc.freeze). A full collection of a service's
    # ~145,000 startup objects took ~80 ms here, and it fell in the middle of requests: the
    # timeline's reads had 100 ms tails from it. `threadline serve` turns it on; in-process
    # apps (the tests) leave it off, since frozen objects are never collected.
    gc_freeze_after_start: bool = False
    # How many container objects the process allocates (net) before the collector's youngest
    # generation is swept (gc.set_threshold; Python's default is 700). A timeline read builds
    # ~15,000 objects that live until its response is written: at 700, sweeps ran a dozen
    # times inside every read, walking the growing answer and promoting it to older
    # generations that were swept again (12% of the timeline process's time). Unset leaves
    # Python's default; `threadline serve` and `threadline work` set it.
    gc_young_threshold: int | None = Field(default=None, ge=100, le=10_000_000)

    # Limits on what one request may cost: the body's size (413 beyond it), and each client's
    # request rate per process (429 with Retry-After beyond it; see shared/ratelimit.py).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit_per_second: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    # Where the relay, the consumers and the timers run: in the API process ("in-process", one
    # process does everything), or in a process of their own started by `threadline work`
    # ("separate"), so that they never queue behind requests on the API's event loop.
    background: Literal["in-process", "separate"] = "in-process"

    # Outbox relay
    relay_enabled: bool = True
    relay_batch_size: int = 200
    relay_lease_seconds: float = 30.0
    relay_poll_seconds: float = 2.0

    # Consumers
    consumers_enabled: bool = True
    consumer_max_attempts: int = 5
    # Records a consumer fetches and applies in one transaction (Kafka's max_poll_records too).
    consumer_batch_size: int = Field(default=100, ge=1, le=5000)
    consumer_backoff_seconds: float = 0.2
    consumer_backoff_max_seconds: float = 5.0

    # Timers
    timers_enabled: bool = True
    timers_poll_seconds: float = 1.0
    timers_batch_size: int = 100

    # Authentication: the issuers whose tokens this service accepts, and its own audience.
    auth_issuers: list[IssuerConfig] = [
        IssuerConfig(issuer=DEV_ISSUER, jwks_uri=f"{DEV_ISSUER}/jwks.json")
    ]
    auth_audience: str = ""

    # Calendars (working days and school days)
    calendar_file: str | None = None

    @model_validator(mode="after")
    def _defaults_and_production_guard(self) -> ServiceSettings:
        if self.port == 0:
            self.port = self.default_port
        if not self.auth_audience:
            self.auth_audience = f"threadline:{self.service_name}"
        if self.environment == "production":
            problems = self.production_problems()
            if problems:
                raise ValueError("not safe for production: " + "; ".join(problems))
        return self

    def production_problems(self) -> list[str]:
        """Every development default still in force (all of them, so one restart fixes all)."""
        problems = []
        if self.database_url == DEV_DATABASE_URL:
            problems.append("THREADLINE_DATABASE_URL must be set")
        if self.kafka_bootstrap_servers == DEV_KAFKA:
            problems.append("THREADLINE_KAFKA_BOOTSTRAP_SERVERS must be set")
        for issuer in self.auth_issuers:
            if issuer.issuer == DEV_ISSUER or not issuer.issuer.startswith("https://"):
                problems.append(
                    f"THREADLINE_AUTH_ISSUERS: {issuer.issuer} is not a production issuer "
                    "(an https issuer of an agency's identity provider is required)"
                )
            if issuer.jwks_uri is not None and not issuer.jwks_uri.startswith("https://"):
                problems.append(f"THREADLINE_AUTH_ISSUERS: {issuer.jwks_uri} must be https")
        return problems

    @property
    def db_schema(self) -> str:
        return self.service_name

    @property
    def consumer_group(self) -> str:
        return f"threadline.{self.service_name}"


DEV_PLATFORM_SECRET = "dev-secret-threadline-platform"  # noqa: S105 (development only)


class DisclosingSettings(ServiceSettings):
    """A service that asks the consent service's decision point before it discloses: where the
    decision point is, and the platform client (OAuth2 client credentials at the identity
    provider's ``/oauth2/token``) whose token it asks with. ``THREADLINE_CONSENT_URL`` and
    ``THREADLINE_IDENTITY_URL``, which the local stack and compose set, serve every service."""

    consent_url: str = "http://127.0.0.1:8102"
    identity_url: str = "http://127.0.0.1:8100"
    token_url: str = ""  # default: the identity provider's /oauth2/token
    client_id: str = "threadline-platform"
    client_secret: str = DEV_PLATFORM_SECRET

    @model_validator(mode="after")
    def _token_url(self) -> DisclosingSettings:
        self.token_url = self.platform_token_url
        return self

    @property
    def platform_token_url(self) -> str:
        return self.token_url or f"{self.identity_url.rstrip('/')}/oauth2/token"

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        prefix = f"THREADLINE_{self.service_name.upper()}_"
        if self.client_secret == DEV_PLATFORM_SECRET:
            problems.append(f"{prefix}CLIENT_SECRET must be set (the platform client's secret)")
        if not self.consent_url.startswith("https://"):
            problems.append(f"{prefix}CONSENT_URL (or THREADLINE_CONSENT_URL) must be https")
        if not self.platform_token_url.startswith("https://"):
            problems.append(f"{prefix}TOKEN_URL (or THREADLINE_IDENTITY_URL) must be https")
        return problems
