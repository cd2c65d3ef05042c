from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

#: Relative paths in these settings are taken from the repository, not the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]


class IdentitySettings(ServiceSettings):
    service_name: ClassVar[str] = "identity"
    default_port: ClassVar[int] = 8100
    model_config = SettingsConfigDict(env_prefix="THREADLINE_IDENTITY_", extra="ignore")

    #: The ``iss`` of the tokens and the base of the endpoints; by default http://{host}:{port}.
    issuer: str = ""
    clients_file: Path = Path("config/identity/dev-clients.toml")
    users_file: Path = Path("config/identity/dev-users.toml")
    signing_key_file: Path = Path("var/identity/signing-key.pem")
    token_lifetime_seconds: int = Field(default=900, gt=0, le=3600)
    #: Tokens issued to a person through the portal last a working session; the portal signs
    #: them out when it ends (there is no refresh token).
    user_token_lifetime_seconds: int = Field(default=3600, gt=0, le=8 * 3600)

    @model_validator(mode="after")
    def _development_only(self) -> IdentitySettings:
        if self.environment == "production":
            raise ValueError(
                "the development identity provider must not run in production: "
                "configure the services to trust the agencies' own issuers"
            )
        self.issuer = (self.issuer or f"http://{self.host}:{self.port}").rstrip("/")
        self.clients_file = _from_repo(self.clients_file)
        self.users_file = _from_repo(self.users_file)
        self.signing_key_file = _from_repo(self.signing_key_file)
        return self


def _from_repo(path: Path) -> Path:
    return path if path.is_absolute() else REPO_ROOT / path
