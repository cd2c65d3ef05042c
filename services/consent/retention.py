"""The retention policy, per record type, and the job that applies it.

Case narratives live sealed in the referrals service, one data key per child. When a subject's
narratives pass their retention period this job records ``retention.expired`` in the ledger and
announces it (outbox); the referrals service destroys the subject's data key, which makes every
copy of the narrative unreadable (crypto-shredding). The ledger's metadata is kept: it is the
proof that each disclosure had a lawful basis, and deleting an entry would break the chain.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.events import RetentionExpired
from services.consent.ledger import Draft
from services.consent.models import AccessRecord, CaseSubject, RetentionAction, plumbing
from services.consent.writer import Batch
from shared import outbox

CASE_NARRATIVE = "case_narrative"
SWEEP_LIMIT = 500


class RetentionPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class RetentionPolicy:
    narrative_years_after_last_referral: int
    narrative_until_age: int | None
    access_log_years: int

    def describe(self) -> str:
        until = (
            f", and for a child at least until age {self.narrative_until_age}"
            if self.narrative_until_age
            else ""
        )
        return f"{self.narrative_years_after_last_referral} years after the last referral{until}"

    def narrative_expiry(
        self, last_referral_at: datetime, date_of_birth: date | None, is_child: bool
    ) -> datetime:
        expiry = _add_years(last_referral_at, self.narrative_years_after_last_referral)
        if is_child and self.narrative_until_age is not None and date_of_birth is not None:
            birthday = date_of_birth.replace(year=date_of_birth.year + self.narrative_until_age)
            expiry = max(expiry, datetime.combine(birthday, last_referral_at.timetz()))
        return expiry


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _positive_int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RetentionPolicyError(f"[{where}] {key} must be a whole number of at least 1")
    return value


def parse(document: dict[str, Any]) -> RetentionPolicy:
    narrative = document.get(CASE_NARRATIVE)
    if not isinstance(narrative, dict):
        raise RetentionPolicyError("[case_narrative] is required")
    access = document.get("access_log", {"years": 6})
    ledger = document.get("ledger", {"keep": "always"})
    if ledger.get("keep") != "always":
        raise RetentionPolicyError(
            '[ledger] keep must be "always": ledger metadata is the proof of lawful disclosure, '
            "and deleting entries would break the chain"
        )
    until_age = narrative.get("until_age")
    return RetentionPolicy(
        narrative_years_after_last_referral=_positive_int(
            narrative, "years_after_last_referral", CASE_NARRATIVE
        ),
        narrative_until_age=None
        if until_age is None
        else _positive_int(narrative, "until_age", CASE_NARRATIVE),
        access_log_years=_positive_int(access, "years", "access_log"),
    )


def load(path: Path) -> RetentionPolicy:
    try:
        return parse(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RetentionPolicyError(f"cannot read {path}: {error}") from error


@dataclass(frozen=True)
class Candidate:
    subject_id: uuid.UUID
    referral_ids: list[uuid.UUID]
    last_referral_at: datetime
    date_of_birth: date | None
    is_child: bool


async def due_for_expiry(
    session: AsyncSession, policy: RetentionPolicy, now: datetime, limit: int
) -> list[Candidate]:
    """Subjects whose narratives have passed their retention and have not been expired yet."""
    done = select(RetentionAction.subject_id).where(RetentionAction.record_type == CASE_NARRATIVE)
    cutoff = _add_years(now, -policy.narrative_years_after_last_referral)
    rows = (
        await session.execute(
            select(
                CaseSubject.subject_id,
                func.array_agg(CaseSubject.referral_id),
                func.max(CaseSubject.received_at),
                func.max(CaseSubject.date_of_birth),
                func.bool_or(CaseSubject.role == "child"),
            )
            .where(CaseSubject.subject_id.not_in(done))
            .group_by(CaseSubject.subject_id)
            .having(func.max(CaseSubject.received_at) <= cutoff)
            .order_by(func.max(CaseSubject.received_at))
            .limit(limit)
        )
    ).all()
    candidates = [
        Candidate(subject, sorted(referrals), last, born, bool(child))
        for subject, referrals, last, born, child in rows
    ]
    return [
        c
        for c in candidates
        if policy.narrative_expiry(c.last_referral_at, c.date_of_birth, c.is_child) <= now
    ]


@dataclass(frozen=True)
class ExpireNarratives:
    """Record and announce the expiry of these subjects' case narratives."""

    candidates: tuple[Candidate, ...]
    policy: RetentionPolicy

    def subjects(self) -> Iterable[uuid.UUID]:
        return ()

    async def execute(self, batch: Batch) -> int:
        for candidate in self.candidates:
            entry = batch.chain.add(
                Draft(
                    kind="retention.expired",
                    subject_ids=[candidate.subject_id],
                    payload={
                        "record_type": CASE_NARRATIVE,
                        "subject_id": candidate.subject_id,
                        "referral_ids": candidate.referral_ids,
                        "last_referral_at": candidate.last_referral_at,
                        "policy": self.policy.describe(),
                        "action": "the holder destroys the subject's data key (crypto-shred); "
                        "ledger metadata is kept",
                    },
                    outcome="expired",
                )
            )
            batch.session.add(
                RetentionAction(
                    subject_id=candidate.subject_id,
                    record_type=CASE_NARRATIVE,
                    expired_at=batch.now,
                    ledger_sequence=entry.sequence,
                )
            )
            await outbox.append(
                batch.session,
                plumbing,
                RetentionExpired(
                    subject_id=candidate.subject_id,
                    record_type=CASE_NARRATIVE,
                    referral_ids=candidate.referral_ids,
                    last_referral_at=candidate.last_referral_at,
                    expired_at=batch.now,
                    policy=self.policy.describe(),
                    ledger_sequence=entry.sequence,
                ),
                service="consent",
                now=batch.now,
            )
        return len(self.candidates)


async def purge_access_log(session: AsyncSession, policy: RetentionPolicy, now: datetime) -> int:
    cutoff = now - timedelta(days=round(365.25 * policy.access_log_years))
    result = await session.execute(delete(AccessRecord).where(AccessRecord.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
