"""Information sharing agreements and the consent scope of referrals, read from configuration.

A partnership's agreements change by configuration and review, not by code: who may send what to
whom, for which purposes, on which default basis (config/consent/agreements.toml).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from shared.disclosures import Article6Basis

ANY = "*"


class AgreementsError(ValueError):
    """The agreements file is not valid; the service refuses to start on it."""


@dataclass(frozen=True)
class Permission:
    senders: frozenset[str]
    recipients: frozenset[str]
    purposes: frozenset[str]
    data_categories: frozenset[str]

    def covers(self, sender: str, recipient: str, purpose: str, categories: list[str]) -> bool:
        if sender not in self.senders or recipient not in self.recipients:
            return False
        if purpose not in self.purposes:
            return False
        return ANY in self.data_categories or set(categories) <= self.data_categories


@dataclass(frozen=True)
class Agreement:
    id: str
    name: str
    partnership: str
    default_basis: Article6Basis
    valid_from: date
    valid_until: date
    transfer: str
    retention: str
    permissions: tuple[Permission, ...]

    def refusal(
        self, sender: str, recipient: str, purpose: str, categories: list[str], on: date
    ) -> str | None:
        """Why this agreement does not cover the disclosure, or None when it does."""
        if not self.valid_from <= on <= self.valid_until:
            return (
                f"agreement {self.id} is in force from {self.valid_from} to {self.valid_until}, "
                f"not on {on}"
            )
        if any(p.covers(sender, recipient, purpose, categories) for p in self.permissions):
            return None
        return (
            f"agreement {self.id} does not let {sender} share {', '.join(sorted(categories))} "
            f"with {recipient} for {purpose}"
        )


@dataclass(frozen=True)
class ConsentScope:
    """What a consent recorded on a referral covers."""

    data_categories: tuple[str, ...]
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]


@dataclass(frozen=True)
class Agreements:
    by_id: dict[str, Agreement]
    override_requires_manager_approval: bool
    special_category_requires_manager_approval: bool
    referral_consent: ConsentScope

    def get(self, agreement_id: str) -> Agreement | None:
        return self.by_id.get(agreement_id)


def _strings(table: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise AgreementsError(f"{where}.{key} must be a non-empty list of strings")
    return frozenset(value)


def _date(table: dict[str, Any], key: str, where: str) -> date:
    value = table.get(key)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise AgreementsError(f"{where}.{key} must be a date (YYYY-MM-DD)")


def parse(document: dict[str, Any]) -> Agreements:
    agreements: dict[str, Agreement] = {}
    for index, table in enumerate(document.get("agreements", [])):
        where = f"agreements[{index}]"
        try:
            basis = Article6Basis(table["default_basis"])
        except (KeyError, ValueError) as error:
            raise AgreementsError(f"{where}.default_basis must be an Article 6 basis") from error
        permissions = tuple(
            Permission(
                senders=_strings(p, "from", f"{where}.permissions[{n}]"),
                recipients=_strings(p, "to", f"{where}.permissions[{n}]"),
                purposes=_strings(p, "purposes", f"{where}.permissions[{n}]"),
                data_categories=_strings(p, "data_categories", f"{where}.permissions[{n}]"),
            )
            for n, p in enumerate(table.get("permissions", []))
        )
        if not permissions:
            raise AgreementsError(f"{where} grants no permissions")
        for key in ("id", "name", "partnership", "transfer", "retention"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise AgreementsError(f"{where}.{key} is required")
        if table["id"] in agreements:
            raise AgreementsError(f"{where}.id {table['id']!r} is used twice")
        agreements[table["id"]] = Agreement(
            id=table["id"],
            name=table["name"],
            partnership=table["partnership"],
            default_basis=basis,
            valid_from=_date(table, "valid_from", where),
            valid_until=_date(table, "valid_until", where),
            transfer=table["transfer"],
            retention=table["retention"],
            permissions=permissions,
        )
    policy = document.get("policy", {})
    scope = document.get("referral_consent")
    if not isinstance(scope, dict):
        raise AgreementsError("[referral_consent] is required: what a referral's consent covers")
    return Agreements(
        by_id=agreements,
        override_requires_manager_approval=bool(
            policy.get("override_requires_manager_approval", True)
        ),
        special_category_requires_manager_approval=bool(
            policy.get("special_category_requires_manager_approval", False)
        ),
        referral_consent=ConsentScope(
            data_categories=tuple(sorted(_strings(scope, "data_categories", "referral_consent"))),
            recipients=tuple(sorted(_strings(scope, "recipients", "referral_consent"))),
            purposes=tuple(sorted(_strings(scope, "purposes", "referral_consent"))),
        ),
    )


def load(path: Path) -> Agreements:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise AgreementsError(f"cannot read {path}: {error}") from error
    return parse(document)
