"""The demo people who sign in to the portal, read from a TOML file (development only).

A person's role decides the scopes of the tokens issued on their behalf; their organisation
becomes the tokens' ``org`` claim, exactly as a client's does for client credentials, so the
APIs apply the same object-level rules to a person as to their organisation's system.
"""

from __future__ import annotations

import hmac
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Agency

Role = Literal["dsl", "mash_worker", "mash_manager", "dpo"]

#: What each role may do through the APIs: the scopes of its access tokens.
ROLE_SCOPES: Final[dict[str, frozenset[str]]] = {
    "dsl": frozenset({"referrals:write", "referrals:read"}),
    "mash_worker": frozenset({"referrals:read", "mash:triage"}),
    "mash_manager": frozenset({"referrals:read", "mash:triage"}),
    "dpo": frozenset({"consent:audit"}),
}
#: Which services a role's access tokens are for.
ROLE_AUDIENCES: Final[dict[str, tuple[str, ...]]] = {
    "dsl": ("threadline:referrals", "threadline:notifications"),
    "mash_worker": (
        "threadline:referrals",
        "threadline:notifications",
        "threadline:timeline",
        "threadline:linking",
    ),
    "mash_manager": (
        "threadline:referrals",
        "threadline:notifications",
        "threadline:timeline",
        "threadline:linking",
    ),
    "dpo": ("threadline:consent",),
}
#: The kind of organisation each role belongs to (checked when the file is read).
ROLE_AGENCY: Final[dict[str, str]] = {
    "dsl": "school",
    "mash_worker": "mash",
    "mash_manager": "mash",
    "dpo": "dpo",
}


class UserEntry(BaseModel):
    """One ``[[users]]`` table of the users file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(pattern=r"^[a-z0-9._-]{2,64}$")
    password: str = Field(min_length=8)
    name: str = Field(min_length=1, max_length=200)
    role: Role
    organisation_code: str = Field(min_length=1, max_length=64)
    organisation_name: str = Field(min_length=1, max_length=200)
    agency: Agency


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserEntry] = Field(min_length=1)


@dataclass(frozen=True)
class User:
    """A person, their role, and the organisation they act for."""

    username: str
    name: str
    role: str
    organisation_code: str
    organisation_name: str
    agency: Agency
    password: str = field(repr=False)

    @property
    def scopes(self) -> frozenset[str]:
        return ROLE_SCOPES[self.role]

    @property
    def audiences(self) -> tuple[str, ...]:
        return ROLE_AUDIENCES[self.role]


class UserRegistry:
    """The known people, and the one place a password is compared."""

    def __init__(self, users: Iterable[User]) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            if user.username in self._users:
                raise ValueError(f"user {user.username!r} is defined twice")
            if ROLE_AGENCY[user.role] != user.agency:
                raise ValueError(
                    f"user {user.username!r}: a {user.role} belongs to a {ROLE_AGENCY[user.role]}"
                    f" organisation, not a {user.agency}"
                )
            self._users[user.username] = user

    def __iter__(self) -> Iterator[User]:
        return iter(self._users.values())

    def get(self, username: str) -> User | None:
        return self._users.get(username)

    def authenticate(self, username: str, password: str) -> User | None:
        """Constant-time, and compared even for an unknown name (timing reveals neither)."""
        user = self._users.get(username.strip().lower())
        expected = user.password if user is not None else _NO_SUCH_USER
        matches = hmac.compare_digest(password.encode(), expected.encode())
        return user if user is not None and matches else None


_NO_SUCH_USER = "no-such-user-" + "-" * 32


def load_users(path: Path) -> UserRegistry:
    with path.open("rb") as file:
        document = UsersFile.model_validate(tomllib.load(file))
    return UserRegistry(
        User(
            username=entry.username,
            name=entry.name,
            role=entry.role,
            organisation_code=entry.organisation_code,
            organisation_name=entry.organisation_name,
            agency=entry.agency,
            password=entry.password,
        )
        for entry in document.users
    )
