"""Per-organisation routing: which mailbox or webhook endpoint gets which kind of message, for
which role, plus the partnership's own teams and the configured pupil rolls.

Configuration, reviewed by the partnership, in a TOML file (``config/notifications/routing.toml``
is the demo's). Recipients narrow their channels further through the preferences API.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from services.notifications.webhooks import parse_secret

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20)]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z_*]{1,40}$")]
KindPattern = Annotated[str, StringConstraints(pattern=r"^[a-z_.*]{1,60}$")]
Channel = Literal["email", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "webhook")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Mailbox(_Strict):
    address: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    roles: list[Role] = Field(default_factory=lambda: ["*"], min_length=1)
    kinds: list[KindPattern] = Field(default_factory=lambda: ["*"], min_length=1)


class WebhookEndpoint(_Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$")]
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=500)]
    # The first secret signs; every one signs while a rotation is under way.
    secrets: list[str] = Field(default_factory=list)
    # Or: an environment variable holding the secrets, space-separated (kept out of the file).
    secrets_env: str | None = None
    roles: list[Role] = Field(default_factory=lambda: ["*"], min_length=1)
    kinds: list[KindPattern] = Field(default_factory=lambda: ["*"], min_length=1)

    @model_validator(mode="after")
    def _has_secrets(self) -> WebhookEndpoint:
        if not self.secrets and not self.secrets_env:
            raise ValueError(f"webhook {self.id!r} needs secrets or secrets_env")
        for secret in self.secrets:
            parse_secret(secret)  # raises ValueError naming what is wrong
        return self

    def signing_secrets(self) -> list[str]:
        if self.secrets_env:
            found = os.environ.get(self.secrets_env, "").split()
            if not found:
                raise ValueError(f"webhook {self.id!r}: ${self.secrets_env} holds no secret")
            return found
        return list(self.secrets)


class Organisation(_Strict):
    code: Code
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    agency: Literal["school", "health", "police", "local_authority", "mash"]
    telephone: str | None = None
    mailboxes: list[Mailbox] = Field(default_factory=list)
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)


class Partnership(_Strict):
    """The teams every partnership has, by organisation code."""

    name: str
    # The information sharing agreement the notifications' disclosures rely on.
    agreement_id: str
    mash: Code
    mash_duty_telephone: str
    education_safeguarding: Code
    children_social_care: Code
    out_of_hours_telephone: str


class PupilRoll(_Strict):
    school_urn: Code
    upns: list[str] = Field(default_factory=list)


class NotInSchool(_Strict):
    """Children known not to attend a school (e.g. elective home education), by UPN."""

    upns: list[str] = Field(default_factory=list)


class RoutingFile(_Strict):
    partnership: Partnership
    organisations: list[Organisation] = Field(default_factory=list)
    pupil_rolls: list[PupilRoll] = Field(default_factory=list)
    not_in_school: NotInSchool = NotInSchool()


@dataclass(frozen=True)
class Route:
    """One way out of Threadline for a message: a mailbox or a webhook endpoint."""

    channel: Channel
    address: str
    endpoint_id: str | None = None


def _matches(patterns: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


class Routing:
    def __init__(self, document: RoutingFile) -> None:
        self.document = document
        self.partnership = document.partnership
        self._organisations = {org.code: org for org in document.organisations}
        self._webhooks = {hook.id: hook for org in document.organisations for hook in org.webhooks}
        self._rolls = {upn: roll.school_urn for roll in document.pupil_rolls for upn in roll.upns}
        self._not_in_school = frozenset(document.not_in_school.upns)

    def organisation(self, code: str) -> Organisation | None:
        return self._organisations.get(code)

    def name_of(self, code: str) -> str:
        organisation = self._organisations.get(code)
        return organisation.name if organisation else code

    def telephone_of(self, code: str) -> str | None:
        organisation = self._organisations.get(code)
        return organisation.telephone if organisation else None

    def webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self._webhooks.get(endpoint_id)

    def routes(self, organisation_code: str, role: str, kind: str) -> list[Route]:
        """Every mailbox and endpoint of the organisation configured for this role and kind."""
        organisation = self._organisations.get(organisation_code)
        if organisation is None:
            return []
        found = [
            Route("email", box.address)
            for box in organisation.mailboxes
            if _matches(box.roles, role) and _matches(box.kinds, kind)
        ]
        found += [
            Route("webhook", hook.url, hook.id)
            for hook in organisation.webhooks
            if _matches(hook.roles, role) and _matches(hook.kinds, kind)
        ]
        return found

    def school_on_roll(self, upns: Iterable[str]) -> str | None:
        for upn in upns:
            if upn in self._rolls:
                return self._rolls[upn]
        return None

    def known_not_in_school(self, upns: Iterable[str]) -> bool:
        return any(upn in self._not_in_school for upn in upns)


def load(path: Path) -> Routing:
    """Read and check a routing file; a ValueError names the file and the offending key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: {error}") from error
    try:
        document = RoutingFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ValueError(f"{path}: {problems}") from error
    codes = [org.code for org in document.organisations]
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise ValueError(f"{path}: organisations listed twice: {duplicates}")
    hooks = [hook.id for org in document.organisations for hook in org.webhooks]
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"{path}: webhook ids must be unique")
    return Routing(document)
