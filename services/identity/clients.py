"""The demo agencies' OAuth2 clients, read from a TOML file (development only)."""

from __future__ import annotations

import hmac
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.auth import Agency

#: RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'.
ScopeToken = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]


class ClientEntry(BaseModel):
    """One ``[[clients]]`` table of the clients file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=r"^[A-Za-z0-9._-]{3,64}$")
    name: str = Field(min_length=1)
    secret: str = Field(min_length=16)
    organisation_code: str = Field(min_length=1, max_length=64)
    agency: Agency
    scopes: list[ScopeToken] = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)


class ClientsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: list[ClientEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Client:
    """An agency's client: who it speaks for, what it may ask for, and for which services."""

    client_id: str
    name: str
    organisation_code: str
    agency: Agency
    scopes: frozenset[str]
    audiences: tuple[str, ...]
    secret: str = field(repr=False)


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
        )
        for entry in document.clients
    )
