"""Every read query of the consent service (the writes are the ledger commands')."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.models import (
    AccessRecord,
    CaseSubject,
    ConsentRecord,
    LedgerVerification,
    RetentionAction,
    RetentionRun,
    ledger,
)
from shared.auth import Principal


@dataclass(frozen=True)
class DecisionFilter:
    kind: str | None = None
    subject_id: uuid.UUID | None = None
    agency: str | None = None  # either end
    from_agency: str | None = None
    to_agency: str | None = None
    purpose: str | None = None
    lawful_basis: str | None = None
    outcome: str | None = None
    consent_status: str | None = None
    without_consent: bool = False
    overridden: bool = False
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Paging:
    """Oldest first after ``after_sequence``, or newest first before ``before_sequence``."""

    limit: int
    after_sequence: int | None = None
    before_sequence: int | None = None
    newest_first: bool = False


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _page(self, query: Select[Any], paging: Paging) -> Select[Any]:
        if paging.newest_first:
            if paging.before_sequence is not None:
                query = query.where(ledger.c.sequence < paging.before_sequence)
            return query.order_by(ledger.c.sequence.desc()).limit(paging.limit)
        if paging.after_sequence is not None:
            query = query.where(ledger.c.sequence > paging.after_sequence)
        return query.order_by(ledger.c.sequence).limit(paging.limit)

    async def entries(self, where: DecisionFilter, paging: Paging) -> list[Row[Any]]:
        """Ledger entries of any kind (or of ``where.kind``) matching the filter."""
        c = ledger.c
        query = select(ledger)
        if where.kind is not None:
            query = query.where(c.kind == where.kind)
        if where.subject_id is not None:
            query = query.where(c.subject_ids.contains([where.subject_id]))
        if where.agency is not None:
            query = query.where(or_(c.from_agency == where.agency, c.to_agency == where.agency))
        for column, value in (
            (c.from_agency, where.from_agency),
            (c.to_agency, where.to_agency),
            (c.purpose, where.purpose),
            (c.lawful_basis, where.lawful_basis),
            (c.outcome, where.outcome),
            (c.consent_status, where.consent_status),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.without_consent:
            query = query.where(and_(c.outcome == "share", c.consent_status != "given"))
        if where.overridden:
            query = query.where(c.payload["consent_overridden"].as_boolean().is_(True))
        if where.since is not None:
            query = query.where(c.recorded_at >= where.since)
        if where.until is not None:
            query = query.where(c.recorded_at < where.until)
        return list((await self.session.execute(self._page(query, paging))).all())

    async def withdrawals(self, subject_id: uuid.UUID | None, paging: Paging) -> list[Row[Any]]:
        return await self.entries(
            DecisionFilter(kind="consent.withdrawn", subject_id=subject_id), paging
        )

    async def decisions_changed_by(self, withdrawal: Row[Any]) -> list[Row[Any]]:
        """Later decisions about the subject whose consent status came from this withdrawal."""
        consent_id = withdrawal.payload["consent_id"]
        query = (
            select(ledger)
            .where(ledger.c.kind == "disclosure.decided")
            .where(ledger.c.subject_ids.overlap(list(withdrawal.subject_ids)))
            .where(ledger.c.sequence > withdrawal.sequence)
            .where(ledger.c.payload["withdrawals_applied"].contains([consent_id]))
            .order_by(ledger.c.sequence)
            .limit(1000)
        )
        return list((await self.session.execute(query)).all())

    async def about_subject(self, subject_id: uuid.UUID) -> list[Row[Any]]:
        query = (
            select(ledger)
            .where(ledger.c.subject_ids.contains([subject_id]))
            .order_by(ledger.c.sequence)
        )
        return list((await self.session.execute(query)).all())

    async def consents(self, subject_id: uuid.UUID) -> list[ConsentRecord]:
        """Consent records about the subject or given by them."""
        query = (
            select(ConsentRecord)
            .where(
                or_(
                    ConsentRecord.subject_id == subject_id,
                    ConsentRecord.grantor_subject_id == subject_id,
                )
            )
            .order_by(ConsentRecord.ledger_sequence)
        )
        return list(await self.session.scalars(query))

    async def consent(self, consent_id: uuid.UUID) -> ConsentRecord | None:
        return await self.session.get(ConsentRecord, consent_id)

    async def case_subject_rows(self, subject_id: uuid.UUID) -> list[CaseSubject]:
        query = select(CaseSubject).where(CaseSubject.subject_id == subject_id)
        return list(await self.session.scalars(query.order_by(CaseSubject.received_at)))

    async def retention_actions(self, subject_id: uuid.UUID) -> list[RetentionAction]:
        query = select(RetentionAction).where(RetentionAction.subject_id == subject_id)
        return list(await self.session.scalars(query))

    async def retention_runs(self, limit: int) -> list[RetentionRun]:
        query = select(RetentionRun).order_by(RetentionRun.ran_at.desc(), RetentionRun.id.desc())
        return list(await self.session.scalars(query.limit(limit)))

    async def verifications(self, limit: int) -> list[LedgerVerification]:
        query = select(LedgerVerification).order_by(
            LedgerVerification.verified_at.desc(), LedgerVerification.id.desc()
        )
        return list(await self.session.scalars(query.limit(limit)))

    async def record_verification(self, verification: LedgerVerification) -> None:
        self.session.add(verification)
        await self.session.flush()

    async def record_access(
        self,
        principal: Principal,
        action: str,
        query: dict[str, Any],
        subject_id: uuid.UUID | None = None,
    ) -> None:
        """Every DPO read is recorded, in the transaction that reads."""
        self.session.add(
            AccessRecord(
                principal=principal.subject,
                organisation_code=principal.organisation_code,
                agency=principal.agency,
                action=action,
                subject_id=subject_id,
                query=query,
            )
        )
        await self.session.flush()
