from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.auth import DEV_ISSUER
from shared.settings import ServiceSettings

DEV_CLIENT_SECRET = "dev-secret-threadline-portal"  # noqa: S105 (the development client's)


class PortalSettings(ServiceSettings):
    """``THREADLINE_PORTAL_*`` first, then ``THREADLINE_*``: so ``THREADLINE_REFERRALS_URL`` and
    ``THREADLINE_IDENTITY_ISSUER``, which the local stack sets for every process, reach here."""

    service_name: ClassVar[str] = "portal"
    default_port: ClassVar[int] = 8105
    model_config = SettingsConfigDict(env_prefix="THREADLINE_PORTAL_", extra="ignore")

    #: The portal's address as other processes reach it; by default http://{host}:{port}.
    url: str = ""
    #: … and as people's browsers reach it (the sign-in redirect URI); by default ``url``.
    public_url: str = ""
    #: The OpenID provider: its issuer (the portal fetches its discovery document from there)…
    identity_issuer: str = DEV_ISSUER
    #: … and, when browsers reach it at another address than the portal does (containers),
    #: that address.
    identity_public_url: str = ""
    client_id: str = "threadline-portal"
    client_secret: str = DEV_CLIENT_SECRET
    referrals_url: str = "http://127.0.0.1:8101"
    notifications_url: str = "http://127.0.0.1:8103"
    consent_url: str = "http://127.0.0.1:8102"
    linking_url: str = "http://127.0.0.1:8104"
    timeline_url: str = "http://127.0.0.1:8106"
    #: A session ends after this long without a request, and in any case when the access token
    #: it holds expires (the person signs in again).
    session_idle_minutes: int = Field(default=30, ge=1, le=8 * 60)
    #: Cookies are always HttpOnly and SameSite=Lax; Secure unless turned off, which only a
    #: development or test environment may do (browsers accept Secure cookies on http://localhost
    #: and http://127.0.0.1, so even development keeps it on).
    cookie_secure: bool = True
    api_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _portal_defaults(self) -> PortalSettings:
        self.url = (self.url or f"http://{self.host}:{self.port}").rstrip("/")
        self.public_url = (self.public_url or self.url).rstrip("/")
        self.identity_issuer = self.identity_issuer.rstrip("/")
        self.identity_public_url = (self.identity_public_url or self.identity_issuer).rstrip("/")
        if self.environment == "production":
            problems = []
            if self.client_secret == DEV_CLIENT_SECRET:
                problems.append("THREADLINE_PORTAL_CLIENT_SECRET must be set")
            if not self.public_url.startswith("https://"):
                problems.append("THREADLINE_PORTAL_PUBLIC_URL must be https")
            if not self.identity_issuer.startswith("https://"):
                problems.append("THREADLINE_PORTAL_IDENTITY_ISSUER must be an https issuer")
            if not self.cookie_secure:
                problems.append("THREADLINE_PORTAL_COOKIE_SECURE cannot be off")
            if problems:
                raise ValueError("not safe for production: " + "; ".join(problems))
        return self

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/auth/callback"
