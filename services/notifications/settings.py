from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DisclosingSettings


class NotificationsSettings(DisclosingSettings):
    service_name: ClassVar[str] = "notifications"
    default_port: ClassVar[int] = 8103
    model_config = SettingsConfigDict(env_prefix="THREADLINE_NOTIFICATIONS_", extra="ignore")

    # Who gets which message, how (relative paths are from the working directory).
    routing_file: str = "config/notifications/routing.toml"
    # Where people read messages (links in e-mails and webhooks).
    portal_url: str = "http://127.0.0.1:8105"

    # The consent service's decision point is asked before any message with personal data goes
    # (consent_url, identity_url or token_url, client_id, client_secret: DisclosingSettings),
    # as the platform client, which may ask on the agencies' behalf.

    # E-mail (SMTP). In production use STARTTLS or implicit TLS and an authenticated relay.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_from: str = "Threadline <notifications@threadline.invalid>"
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)

    # Webhooks: the Standard Webhooks specification recommends 15-30 s for a receiver.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)

    # Delivery: attempts per channel, exponential backoff with full jitter between them
    # (the n-th retry waits a random time up to min(max, base * 2**n)).
    delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    delivery_backoff_base_seconds: float = Field(default=5.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    delivery_concurrency: int = Field(default=64, ge=1, le=1000)
    delivery_batch_size: int = Field(default=200, ge=1, le=5000)
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    # A decision point that cannot answer is asked again (same backoff); after this many tries
    # the message is failed, visible to its sender and the MASH manager.
    decision_max_attempts: int = Field(default=12, ge=1, le=100)

    # Alerts wait this long for linking to say who a child is, then go on without it.
    link_wait_seconds: float = Field(default=120.0, gt=0)

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if not (self.smtp_starttls or self.smtp_tls):
            problems.append("SMTP must use TLS (THREADLINE_NOTIFICATIONS_SMTP_STARTTLS or _TLS)")
        return problems
