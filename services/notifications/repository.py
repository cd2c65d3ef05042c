"""Every query of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.models import (
    DeadLetter,
    Delivery,
    InboxItem,
    Message,
    PendingAlert,
    Preference,
    ProtectionStatus,
    ReferralFact,
    Subject,
)
from shared.db import prebuilt_insert

_INBOX_ITEMS: Table = InboxItem.__table__  # type: ignore[assignment]
_ADD_INBOX_ITEM = prebuilt_insert(_INBOX_ITEMS)
_REFERRAL_FACTS: Table = ReferralFact.__table__  # type: ignore[assignment]
REFERRAL_FACT_COLUMNS = (
    "referral_id",
    "reference",
    "referrer_organisation",
    "referrer_agency",
    "referrer_name",
    "raised_via",
    "received_at",
    "subject_ids",
)
_ADD_REFERRAL_FACT = prebuilt_insert(_REFERRAL_FACTS, REFERRAL_FACT_COLUMNS).on_conflict_do_nothing(
    index_elements=[_REFERRAL_FACTS.c.referral_id]
)
_SUBJECTS: Table = Subject.__table__  # type: ignore[assignment]
SUBJECT_COLUMNS = (
    "subject_id",
    "source_type",
    "source_id",
    "organisation_code",
    "agency",
    "school_urn",
    "school_status",
    "upn",
    "nhs_number",
    "seen_at",
)
_SUBJECT_INSERT = prebuilt_insert(_SUBJECTS, SUBJECT_COLUMNS)
# What a record says of a child replaces what an earlier record said; a link that came first
# (person_id, record_id, linked_at) is kept.
_UPSERT_SUBJECT = _SUBJECT_INSERT.on_conflict_do_update(
    index_elements=[_SUBJECTS.c.subject_id],
    set_={name: _SUBJECT_INSERT.excluded[name] for name in SUBJECT_COLUMNS[1:]},
)


_RESOLVE = (
    update(_INBOX_ITEMS)
    .where(_INBOX_ITEMS.c.referral_id == bindparam("of_referral"))
    .where(_INBOX_ITEMS.c.kind.in_(bindparam("of_kinds", expanding=True)))
    .where(_INBOX_ITEMS.c.status == "open")
    .values(status="done", resolved_at=bindparam("resolved"))
)


_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
DELIVERY_COLUMNS = (
    "id",
    "message_id",
    "channel",
    "address",
    "endpoint_id",
    "webhook_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)
_ADD_DELIVERY = prebuilt_insert(_DELIVERIES, DELIVERY_COLUMNS).on_conflict_do_nothing(
    index_elements=[_DELIVERIES.c.message_id, _DELIVERIES.c.channel, _DELIVERIES.c.address]
)


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, rows: list[dict[str, Any]]) -> None:
        """Insert inbox items given as rows with every column (one executemany)."""
        if rows:
            await self.session.execute(_ADD_INBOX_ITEM, rows)

    async def resolve(self, referral_id: uuid.UUID, kinds: tuple[str, ...], now: datetime) -> None:
        """Mark the referral's open items of these kinds done (one statement, built once)."""
        await self.session.execute(
            _RESOLVE, {"of_referral": referral_id, "of_kinds": list(kinds), "resolved": now}
        )

    async def list(
        self,
        *,
        organisation_code: str | None = None,
        audience: str | None,
        status: str | None,
        referral_id: uuid.UUID | None,
        limit: int,
        offset: int,
    ) -> tuple[list[InboxItem], int]:
        conditions = []
        if organisation_code is not None:
            conditions.append(InboxItem.organisation_code == organisation_code)
        if audience is not None:
            conditions.append(InboxItem.audience == audience)
        if status is not None:
            conditions.append(InboxItem.status == status)
        if referral_id is not None:
            conditions.append(InboxItem.referral_id == referral_id)
        total = await self.session.scalar(
            select(func.count()).select_from(InboxItem).where(*conditions)
        )
        result = await self.session.execute(
            select(InboxItem)
            .where(*conditions)
            .order_by(InboxItem.due_at.asc().nulls_last(), InboxItem.created_at)
            .limit(limit)
            .offset(offset)
        )
        return list(result.scalars()), int(total or 0)


_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_ADD_MESSAGE = (
    prebuilt_insert(_MESSAGES)
    .on_conflict_do_nothing(index_elements=[_MESSAGES.c.dedupe_key])
    .returning(_MESSAGES.c.id)
)


async def _update_by_id(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    """UPDATE rows by ``id``: one executemany per set of columns (the statement compiled once)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for columns, group in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                {
                    name: bindparam(name, type_=table.c[name].type)
                    for name in columns
                    if name != "id"
                }
            )
        )
        params = [
            {**{k: v for k, v in row.items() if k != "id"}, "row_id": row["id"]} for row in group
        ]
        await session.execute(statement, params)


#: A message a recipient may see: sent, or on its way (never refused, never undecided), and
#: when it carries personal data, only once the decision point said share.
SENT = ("sending", "delivered", "failed")


def shown_to_recipient(message: Message) -> bool:
    return message.status in SENT and (message.disclosure is None or message.decision == "share")


class MessageRepository:
    """Messages, their deliveries, the dead-letter store and the recipients' preferences."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert a message unless one with its ``dedupe_key`` exists; its id, or None.

        One statement for every message (the values are parameters), compiled once per process:
        the consumer writes hundreds of messages a second."""
        row = {column.name: values.get(column.name) for column in _MESSAGES.columns}
        result = await self.session.execute(_ADD_MESSAGE, row)
        inserted: uuid.UUID | None = result.scalar_one_or_none()
        return inserted

    async def get(self, message_id: uuid.UUID) -> Message | None:
        return await self.session.get(Message, message_id)

    async def page(
        self,
        *,
        reader: str | None,
        box: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        unacknowledged: bool = False,
        referral_id: uuid.UUID | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[Message], int]:
        """Messages, newest first, as ``reader`` (an organisation; None: the MASH, all) may see
        them: addressed to it once sent, or sent on its behalf. ``box`` narrows to one side."""
        sent = and_(
            Message.status.in_(SENT),
            or_(Message.disclosure.is_(None), Message.decision == "share"),
        )
        conditions: list[ColumnElement[bool]] = []
        if box == "inbox":
            conditions += [Message.recipient_organisation == reader, sent]
        elif box == "sent":
            conditions.append(Message.sender_organisation == reader)
        elif reader is not None:
            conditions.append(
                or_(
                    and_(Message.recipient_organisation == reader, sent),
                    Message.sender_organisation == reader,
                )
            )
        if kind is not None:
            conditions.append(Message.kind == kind)
        if status is not None:
            conditions.append(Message.status == status)
        if unacknowledged:
            conditions.append(Message.acknowledge_by.is_not(None))
            conditions.append(Message.acknowledged_at.is_(None))
        if referral_id is not None:
            conditions.append(Message.referral_id == referral_id)
        total = await self.session.scalar(
            select(func.count()).select_from(Message).where(*conditions)
        )
        result = await self.session.execute(
            select(Message)
            .where(*conditions)
            .order_by(Message.created_at.desc(), Message.id)
            .limit(limit)
            .offset(offset)
        )
        return list(result.scalars()), int(total or 0)

    async def deliveries_of(self, message_ids: list[uuid.UUID]) -> list[Delivery]:
        if not message_ids:
            return []
        result = await self.session.execute(
            select(Delivery)
            .where(Delivery.message_id.in_(message_ids))
            .order_by(Delivery.created_at, Delivery.channel, Delivery.address)
        )
        return list(result.scalars())

    async def acknowledge(self, message_id: uuid.UUID, by: str, now: datetime) -> bool:
        """Record the acknowledgement once; False if it was already acknowledged."""
        result = await self.session.execute(
            update(Message)
            .where(Message.id == message_id)
            .where(Message.acknowledged_at.is_(None))
            .values(acknowledged_at=now, acknowledged_by=by)
            .returning(Message.id)
        )
        return result.first() is not None

    async def mark_escalated(self, message_id: uuid.UUID, now: datetime) -> Message | None:
        """Mark an unacknowledged message escalated (once); the message, or None."""
        result = await self.session.execute(
            update(Message)
            .where(Message.id == message_id)
            .where(Message.acknowledged_at.is_(None))
            .where(Message.escalated_at.is_(None))
            .values(escalated_at=now)
            .returning(Message)
        )
        return result.scalar_one_or_none()

    async def disclosed_about(self, subject_ids: list[uuid.UUID]) -> list[Message]:
        """Messages shared under a disclosure decision about any of these subjects."""
        result = await self.session.execute(
            select(Message)
            .where(Message.subject_ids.overlap(subject_ids))
            .where(Message.decision == "share")
            .where(Message.kind != "consent.withdrawn")
            .order_by(Message.created_at)
        )
        return list(result.scalars())

    # -- the dispatcher's work ----------------------------------------------------------------

    async def claim_messages(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[Message]:
        due = (
            select(Message.id)
            .where(Message.status == "queued")
            .where(Message.next_attempt_at <= now)
            .where(or_(Message.lease_until.is_(None), Message.lease_until < now))
            .order_by(Message.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            update(Message)
            .where(Message.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until)
            .returning(Message)
        )
        return list(result.scalars())

    async def claim_deliveries(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[tuple[Delivery, Message]]:
        due = (
            select(Delivery.id)
            .where(Delivery.status == "pending")
            .where(Delivery.next_attempt_at <= now)
            .where(or_(Delivery.lease_until.is_(None), Delivery.lease_until < now))
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = await self.session.execute(
            update(Delivery)
            .where(Delivery.id.in_(due.scalar_subquery()))
            .values(lease_until=lease_until, attempts=Delivery.attempts + 1)
            .returning(Delivery)
        )
        deliveries = list(claimed.scalars())
        if not deliveries:
            return []
        messages = await self.session.execute(
            select(Message).where(Message.id.in_({d.message_id for d in deliveries}))
        )
        by_id = {message.id: message for message in messages.scalars()}
        return [(delivery, by_id[delivery.message_id]) for delivery in deliveries]

    async def still_leased(
        self, model: type[Message] | type[Delivery], ids: set[uuid.UUID], lease_until: datetime
    ) -> set[uuid.UUID]:
        """Those of ``ids`` still under the lease ``lease_until`` (locked until commit): the
        rest were claimed again, or finished, by another dispatcher once it expired."""
        if not ids:
            return set()
        result = await self.session.execute(
            select(model.id)
            .where(model.id.in_(ids))
            .where(model.lease_until == lease_until)
            .order_by(model.id)
            .with_for_update()
        )
        return set(result.scalars())

    async def add_deliveries(self, rows: list[dict[str, Any]]) -> None:
        """Rows of ``DELIVERY_COLUMNS`` (one executemany); a route already added is kept."""
        if rows:
            await self.session.execute(_ADD_DELIVERY, rows)

    async def update_messages(self, rows: list[dict[str, Any]]) -> None:
        """Each dict: ``id`` and the columns to set (an executemany per set of columns)."""
        await _update_by_id(self.session, Message.__table__, rows)

    async def update_deliveries(self, rows: list[dict[str, Any]]) -> None:
        await _update_by_id(self.session, Delivery.__table__, rows)

    async def settle(self, message_ids: set[uuid.UUID], now: datetime) -> None:
        """A message whose every delivery arrived is delivered.

        The messages are locked first: two workers delivering a message's two deliveries at once
        would each see the other's still pending (READ COMMITTED) and neither settle it. Locked,
        the second waits for the first's commit, and its check then sees both delivered.
        """
        if not message_ids:
            return
        await self.session.execute(
            select(Message.id)
            .where(Message.id.in_(message_ids))
            .order_by(Message.id)
            .with_for_update()
        )
        undelivered = (
            select(Delivery.id)
            .where(Delivery.message_id == Message.id)
            .where(Delivery.status != "delivered")
            .exists()
        )
        await self.session.execute(
            update(Message)
            .where(Message.id.in_(message_ids))
            .where(Message.status == "sending")
            .where(~undelivered)
            .values(status="delivered", delivered_at=now)
        )

    async def add_dead_letters(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(pg_insert(DeadLetter).values(rows))

    async def dead_letters(
        self, *, visible_to: str | None, open_only: bool, limit: int, offset: int
    ) -> tuple[list[tuple[DeadLetter, Message]], int]:
        conditions: list[ColumnElement[bool]] = []
        if open_only:
            conditions.append(DeadLetter.resent_at.is_(None))
        if visible_to is not None:
            conditions.append(Message.sender_organisation == visible_to)
        joined = select(DeadLetter, Message).join(Message, Message.id == DeadLetter.message_id)
        total = await self.session.scalar(
            select(func.count())
            .select_from(DeadLetter)
            .join(Message, Message.id == DeadLetter.message_id)
            .where(*conditions)
        )
        result = await self.session.execute(
            joined.where(*conditions)
            .order_by(DeadLetter.failed_at.desc())
            .limit(limit)
            .offset(offset)
        )
        return [(row[0], row[1]) for row in result.all()], int(total or 0)

    async def dead_letter(self, dead_letter_id: uuid.UUID) -> tuple[DeadLetter, Message] | None:
        result = await self.session.execute(
            select(DeadLetter, Message)
            .join(Message, Message.id == DeadLetter.message_id)
            .where(DeadLetter.id == dead_letter_id)
            .with_for_update(of=DeadLetter)
        )
        row = result.first()
        return (row[0], row[1]) if row else None

    async def resend(
        self, dead_letter: DeadLetter, message: Message, by: str, now: datetime
    ) -> None:
        """Put the failed delivery back in the queue with fresh attempts."""
        dead_letter.resent_at = now
        dead_letter.resent_by = by
        await self.session.execute(
            update(Delivery)
            .where(Delivery.id == dead_letter.delivery_id)
            .values(
                status="pending",
                attempts=0,
                next_attempt_at=now,
                lease_until=None,
                failed_at=None,
            )
        )
        if message.status == "failed":
            message.status = "sending"
            message.failed_at = None

    async def retry(self, message: Message, now: datetime) -> None:
        """Queue a message that failed at the decision point again, with fresh attempts."""
        message.status = "queued"
        message.attempts = 0
        message.next_attempt_at = now
        message.failed_at = None
        message.lease_until = None

    async def preferences(
        self, organisation_code: str, role: str | None = None
    ) -> list[Preference]:
        conditions = [Preference.organisation_code == organisation_code]
        if role is not None:
            conditions.append(Preference.role == role)
        result = await self.session.execute(
            select(Preference).where(*conditions).order_by(Preference.role, Preference.kind)
        )
        return list(result.scalars())

    async def choices(
        self, recipients: set[tuple[str, str]]
    ) -> dict[tuple[str, str, str], set[str]]:
        """The channels each (organisation, role) chose, by kind, in one query."""
        if not recipients:
            return {}
        result = await self.session.execute(
            select(Preference).where(
                tuple_(Preference.organisation_code, Preference.role).in_(list(recipients))
            )
        )
        return {(p.organisation_code, p.role, p.kind): set(p.channels) for p in result.scalars()}

    async def set_preference(self, values: dict[str, Any]) -> None:
        statement = pg_insert(Preference).values(**values)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[Preference.organisation_code, Preference.role, Preference.kind],
                set_={
                    "channels": statement.excluded.channels,
                    "updated_at": statement.excluded.updated_at,
                    "updated_by": statement.excluded.updated_by,
                },
            )
        )

    async def delete_preference(self, organisation_code: str, role: str, kind: str) -> bool:
        result = await self.session.execute(
            delete(Preference)
            .where(Preference.organisation_code == organisation_code)
            .where(Preference.role == role)
            .where(Preference.kind == kind)
            .returning(Preference.id)
        )
        return result.first() is not None


class AlertRepository:
    """What the alerts know of referrals, children, persons and protection statuses."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def remember_referrals(self, rows: list[dict[str, Any]]) -> None:
        """Remember each referral (rows of ``REFERRAL_FACT_COLUMNS``); one already known is kept."""
        if rows:
            await self.session.execute(_ADD_REFERRAL_FACT, rows)

    async def referral(self, referral_id: uuid.UUID) -> ReferralFact | None:
        return await self.session.get(ReferralFact, referral_id)

    async def hold_referral(self, referral_id: uuid.UUID, **values: Any) -> None:
        await self.session.execute(
            update(ReferralFact).where(ReferralFact.referral_id == referral_id).values(**values)
        )

    async def remember_subjects(self, rows: list[dict[str, Any]]) -> None:
        """Record what each record says of a child (rows of ``SUBJECT_COLUMNS``); a link that
        came first is kept. Rows for the same child apply in order: the last one holds."""
        if not rows:
            return
        last = {row["subject_id"]: row for row in rows}
        await self.session.execute(_UPSERT_SUBJECT, list(last.values()))

    async def link(
        self,
        subject_id: uuid.UUID,
        person_id: uuid.UUID,
        record_id: uuid.UUID,
        linked_at: datetime,
    ) -> None:
        """Record that a subject is this person, unless a later link already said otherwise."""
        statement = pg_insert(Subject).values(
            subject_id=subject_id, person_id=person_id, record_id=record_id, linked_at=linked_at
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[Subject.subject_id],
                set_={"person_id": person_id, "record_id": record_id, "linked_at": linked_at},
                where=or_(Subject.linked_at.is_(None), Subject.linked_at <= linked_at),
            )
        )

    async def move_records(self, record_ids: list[uuid.UUID], person_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Subject).where(Subject.record_id.in_(record_ids)).values(person_id=person_id)
        )

    async def subject(self, subject_id: uuid.UUID) -> Subject | None:
        return await self.session.get(Subject, subject_id)

    async def records_of(self, person_id: uuid.UUID) -> list[Subject]:
        result = await self.session.execute(
            select(Subject)
            .where(Subject.person_id == person_id)
            .order_by(Subject.seen_at.desc().nulls_last())
        )
        return list(result.scalars())

    async def subjects_with_nhs_number(self, nhs_number: str) -> list[Subject]:
        result = await self.session.execute(select(Subject).where(Subject.nhs_number == nhs_number))
        return list(result.scalars())

    async def add_status(self, values: dict[str, Any]) -> None:
        await self.session.execute(
            pg_insert(ProtectionStatus).values(**values).on_conflict_do_nothing()
        )

    async def statuses_of(self, subject_ids: list[uuid.UUID]) -> list[ProtectionStatus]:
        if not subject_ids:
            return []
        result = await self.session.execute(
            select(ProtectionStatus)
            .where(ProtectionStatus.subject_id.in_(subject_ids))
            .order_by(ProtectionStatus.effective_date, ProtectionStatus.received_at)
        )
        return list(result.scalars())

    async def add_pending(self, values: dict[str, Any]) -> uuid.UUID | None:
        result = await self.session.execute(
            pg_insert(PendingAlert)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[PendingAlert.contact_id, PendingAlert.subject_id]
            )
            .returning(PendingAlert.id)
        )
        return result.scalar_one_or_none()

    async def claim_pending(
        self, *, subject_id: uuid.UUID | None = None, alert_id: uuid.UUID | None = None
    ) -> list[PendingAlert]:
        """Pending alerts still waiting (for this subject, or this one), locked for resolution."""
        conditions = [PendingAlert.status == "awaiting_link"]
        if subject_id is not None:
            conditions.append(PendingAlert.subject_id == subject_id)
        if alert_id is not None:
            conditions.append(PendingAlert.id == alert_id)
        result = await self.session.execute(
            select(PendingAlert).where(*conditions).with_for_update(skip_locked=False)
        )
        return list(result.scalars())
