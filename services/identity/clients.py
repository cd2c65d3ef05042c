"""The demo agencies' OAuth2 clients, read from a TOML file (development only)."""

from __future__ import annotations

import hmac
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.auth import Agency

#: RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'.
ScopeToken = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]
GrantType = Literal["client_credentials", "authorization_code"]
#: RFC 8252 §7.3: a loopback redirect URI may use any port (a local app picks its own).
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ClientEntry(BaseModel):
    """One ``[[clients]]`` table of the clients file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=r"^[A-Za-z0-9._-]{3,64}$")
    name: str = Field(min_length=1)
    secret: str = Field(min_length=16)
    organisation_code: str | None = Field(default=None, min_length=1, max_length=64)
    agency: Agency | None = None
    scopes: list[ScopeToken] = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    grant_types: list[GrantType] = Field(default=["client_credentials"], min_length=1)
    redirect_uris: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _grants_have_what_they_need(self) -> Self:
        if "client_credentials" in self.grant_types and (
            self.organisation_code is None or self.agency is None
        ):
            raise ValueError(
                f"{self.client_id}: a client_credentials client speaks for an organisation: "
                "give organisation_code and agency"
            )
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError(f"{self.client_id}: an authorization_code client needs redirect_uris")
        for uri in self.redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme not in {"https", "http"} or not parts.netloc or parts.fragment:
                raise ValueError(f"{self.client_id}: {uri!r} is not an absolute redirect URI")
            if parts.scheme == "http" and parts.hostname not in LOOPBACK:
                raise ValueError(f"{self.client_id}: {uri!r} must be https (or a loopback address)")
        return self


class ClientsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[ClientEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Client:
    """An agency's client: who it speaks for, what it may ask for, and for which services."""

    client_id: str
    name: str
    organisation_code: str | None
    agency: Agency | None
    scopes: frozenset[str]
    audiences: tuple[str, ...]
    secret: str = field(repr=False)
    grant_types: frozenset[str] = frozenset({"client_credentials"})
    redirect_uris: tuple[str, ...] = ()

    def may_use(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def redirects_to(self, uri: str) -> bool:
        """Exact match with a registered redirect URI; for a loopback http URI, any port
        (RFC 8252 §7.3). Nothing else: no prefixes, no wildcards."""
        if uri in self.redirect_uris:
            return True
        offered = urlsplit(uri)
        if offered.scheme != "http" or offered.hostname not in LOOPBACK:
            return False
        try:
            offered.port  # noqa: B018 (a malformed port raises here)
        except ValueError:
            return False
        for registered in map(urlsplit, self.redirect_uris):
            if (
                registered.scheme == "http"
                and registered.hostname == offered.hostname
                and registered.path == offered.path
                and registered.query == offered.query
                and not offered.fragment
                and not offered.username
                and not offered.password
            ):
                return True
        return False


class ClientRegistry:
    """The known clients, and the one place a client secret is compared."""

    def __init__(self, clients: Iterable[Client]) -> None:
        self._clients: dict[str, Client] = {}
        for client in clients:
            if client.client_id in self._clients:
                raise ValueError(f"client {client.client_id!r} is defined twice")
            self._clients[client.client_id] = client

    def __iter__(self) -> Iterator[Client]:
        return iter(self._clients.values())

    def redirect_origins(self) -> tuple[str, ...]:
        """Where sign-ins may be sent back to, as CSP sources (a loopback host on any port)."""
        origins: set[str] = set()
        for client in self._clients.values():
            for uri in map(urlsplit, client.redirect_uris):
                if uri.scheme == "http" and uri.hostname in LOOPBACK:
                    host = f"[{uri.hostname}]" if ":" in (uri.hostname or "") else uri.hostname
                    origins.add(f"http://{host}:*")
                else:
                    origins.add(f"{uri.scheme}://{uri.netloc}")
        return tuple(sorted(origins))

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client whose secret this is. The comparison is constant-time, and is made even for
        an unknown client id, so that timing reveals neither the secret nor which ids exist."""
        client = self._clients.get(client_id)
        expected = client.secret if client is not None else _NO_SUCH_CLIENT
        matches = hmac.compare_digest(secret.encode(), expected.encode())
        return client if client is not None and matches else None


_NO_SUCH_CLIENT = "no-such-client-" + "-" * 32


def load_clients(path: Path) -> ClientRegistry:
    with path.open("rb") as file:
        document = ClientsFile.model_validate(tomllib.load(file))
    return ClientRegistry(
        Client(
            client_id=entry.client_id,
            name=entry.name,
            organisation_code=entry.organisation_code,
            agency=entry.agency,
            scopes=frozenset(entry.scopes),
            audiences=tuple(entry.audiences),
            secret=entry.secret,
            grant_types=frozenset(entry.grant_types),
            redirect_uris=tuple(entry.redirect_uris),
        )
        for entry in document.clients
    )
