"""Posting messages and delivering them: the decision point first, then every channel, with
retries that survive restarts.

A message is a row; so is each of its deliveries. The dispatcher claims due rows with
``FOR UPDATE SKIP LOCKED`` and a lease (any number of dispatchers may run), does the network work
outside any transaction, then writes every outcome back in one transaction. A failed attempt
is not slept on: its row gets ``next_attempt_at`` (exponential backoff, full jitter), so a
restart loses no retry and sends nothing early. After the last attempt the delivery is
``failed``, a dead letter is kept for re-sending, the message is ``failed`` and
``notification.failed`` goes to the outbox, all in that same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.channels import EmailChannel, Outcome, Outgoing, WebhookChannel
from services.notifications.events import NotificationFailed
from services.notifications.messages import Draft
from services.notifications.models import Delivery, Message, plumbing
from services.notifications.repository import MessageRepository
from services.notifications.routing import CHANNELS, Route, Routing
from services.notifications.settings import NotificationsSettings
from shared import context, outbox
from shared.clock import Clock
from shared.db import Database, asyncpg_dsn
from shared.disclosures import (
    Decide,
    DecisionPointError,
    DisclosureDecision,
    DisclosureRequest,
)
from shared.ids import uuid7
from shared.logging import get_logger

log = get_logger(__name__)
SERVICE = "notifications"
WAKE_CHANNEL = "notifications_dispatch"


async def post(
    session: AsyncSession, draft: Draft, *, agreement_id: str, now: datetime
) -> uuid.UUID | None:
    """Queue a message in the caller's transaction (once per ``dedupe_key``); its id, or None
    when it was already queued. The dispatcher is woken when the transaction commits."""
    message_id = await MessageRepository(session).add(
        {
            "id": uuid7(),
            "dedupe_key": draft.dedupe_key,
            "kind": draft.kind,
            "source_event_id": draft.source_event_id,
            "recipient_organisation": draft.recipient.organisation,
            "recipient_agency": draft.recipient.agency,
            "recipient_role": draft.recipient.role,
            "recipient_name": draft.recipient.name,
            "sender_organisation": draft.sender.organisation,
            "sender_agency": draft.sender.agency,
            "referral_id": draft.referral_id,
            "contact_id": draft.contact_id,
            "reference": draft.reference,
            "subject_ids": list(draft.subject_ids),
            "person_id": draft.person_id,
            "disclosure": (
                draft.disclosure.request(draft.sender, draft.recipient, agreement_id)
                if draft.disclosure
                else None
            ),
            "title": draft.title,
            "body": draft.body,
            "details": draft.details,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "deliver_by": draft.deliver_by,
            "acknowledge_by": draft.acknowledge_by,
            "created_at": now,
            "correlation_id": context.current().correlation_id,
        }
    )
    if message_id is not None and not session.info.get(WAKE_CHANNEL):
        # One wake-up per transaction is enough: it is delivered when the transaction commits.
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})
        session.info[WAKE_CHANNEL] = True
    return message_id


Choices = dict[tuple[str, str, str], set[str]]


def routes_for(routing: Routing, choices: Choices, message: Message) -> list[Route]:
    """The routing file's mailboxes and endpoints for this recipient and kind, narrowed to the
    channels the recipient chose for this kind (or for every kind) through the preferences API.
    The portal inbox needs no route: every message is in it."""
    configured = routing.routes(
        message.recipient_organisation, message.recipient_role, message.kind
    )
    if message.recipient_role == "social_worker" and message.details.get("worker_email"):
        configured.append(Route("email", str(message.details["worker_email"])))
    recipient = (message.recipient_organisation, message.recipient_role)
    allowed = choices.get((*recipient, message.kind), choices.get((*recipient, "*"), set(CHANNELS)))
    return [route for route in configured if route.channel in allowed]


def backoff(attempt: int, base: float, ceiling: float) -> float:
    """Full jitter: a random wait up to ``min(ceiling, base * 2**(attempt-1))`` seconds."""
    return random.uniform(0, min(ceiling, base * 2 ** max(0, attempt - 1)))  # noqa: S311


@dataclass(frozen=True)
class _Decided:
    message: Message
    decision: DisclosureDecision | None
    error: DecisionPointError | None


@dataclass(frozen=True)
class _Sent:
    delivery: Delivery
    message: Message
    outcome: Outcome


def webhook_payload(message: Message, portal_url: str) -> dict[str, Any]:
    """The webhook body: the Standard Webhooks shape (type, timestamp, data)."""
    return {
        "type": f"threadline.{message.kind}",
        "timestamp": message.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "message_id": str(message.id),
            "kind": message.kind,
            "title": message.title,
            "body": message.body,
            "reference": message.reference,
            "recipient": {
                "organisation_code": message.recipient_organisation,
                "role": message.recipient_role,
                "name": message.recipient_name,
            },
            "sender": {
                "organisation_code": message.sender_organisation,
                "agency": message.sender_agency,
            },
            "deliver_by": message.deliver_by.isoformat() if message.deliver_by else None,
            "acknowledge_by": (
                message.acknowledge_by.isoformat() if message.acknowledge_by else None
            ),
            "acknowledge": f"/v1/messages/{message.id}/acknowledge"
            if message.acknowledge_by
            else None,
            "read_in_portal": f"{portal_url}/notifications/{message.id}",
            "details": {
                key: value for key, value in message.details.items() if key != "worker_email"
            },
        },
    }


def email_text(message: Message, portal_url: str) -> str:
    lines = [message.body, ""]
    if message.acknowledge_by is not None:
        lines.append(
            "Please acknowledge this message in Threadline: "
            f"{portal_url}/notifications/{message.id}"
        )
    lines.append(f"Threadline notification {message.id}")
    return "\n".join(lines)


class Dispatcher:
    """Decides and delivers due messages until stopped."""

    def __init__(
        self,
        database: Database,
        *,
        routing: Routing,
        settings: NotificationsSettings,
        clock: Clock,
        decide: Decide,
        email: EmailChannel,
        webhook: WebhookChannel,
    ) -> None:
        self.database = database
        self.routing = routing
        self.settings = settings
        self.clock = clock
        self.decide = decide
        self.email = email
        self.webhook = webhook
        self._gate = asyncio.Semaphore(settings.delivery_concurrency)
        self._wake = asyncio.Event()
        self.stopping = False
        self.sent_total = 0
        self.decided_total = 0

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def run(self) -> None:
        listener = await self._listen()
        try:
            while not self.stopping:
                try:
                    worked = await self.dispatch_once()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the database may be restarting; try again
                    log.warning("dispatch.failed", error=repr(error))
                    worked = 0
                    await asyncio.sleep(1.0)
                if worked:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self.settings.delivery_poll_seconds
                    )
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.close(timeout=2), timeout=3)

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(self.database.url))
            await connection.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("dispatch.listen_failed", error=repr(error))
            return None
        return connection

    async def dispatch_once(self) -> int:
        """Claim due messages and deliveries, work them concurrently, write the outcomes back;
        returns how many rows were worked."""
        now = self.clock.now()
        lease = now + timedelta(seconds=self.settings.delivery_lease_seconds)
        batch = self.settings.delivery_batch_size
        async with self.database.transaction() as session:
            repository = MessageRepository(session)
            messages = await repository.claim_messages(now, lease, batch)
            deliveries = await repository.claim_deliveries(now, lease, batch)
        if not messages and not deliveries:
            return 0
        decided, sent = await asyncio.gather(
            asyncio.gather(*(self._decide(message) for message in messages)),
            asyncio.gather(*(self._send(delivery, message) for delivery, message in deliveries)),
        )
        await self._write_back(list(decided), list(sent), lease)
        return len(messages) + len(deliveries)

    async def _decide(self, message: Message) -> _Decided:
        if message.disclosure is None:
            return _Decided(message, None, None)
        request = DisclosureRequest.model_validate(
            {**message.disclosure, "subject_ids": [str(s) for s in message.subject_ids]}
        )
        async with self._gate:
            try:
                decision = await self.decide(request)
            except DecisionPointError as error:
                return _Decided(message, None, error)
            except Exception as error:  # e.g. no token from the identity provider: try again
                unreachable = DecisionPointError(
                    503, {"detail": f"{type(error).__name__}: {error}"}
                )
                return _Decided(message, None, unreachable)
        self.decided_total += 1
        return _Decided(message, decision, None)

    async def _send(self, delivery: Delivery, message: Message) -> _Sent:
        payload = webhook_payload(message, self.settings.portal_url)
        outgoing = Outgoing(
            delivery_id=str(delivery.id),
            webhook_id=delivery.webhook_id,
            channel=delivery.channel,
            address=delivery.address,
            endpoint_id=delivery.endpoint_id,
            subject=message.title,
            text=email_text(message, self.settings.portal_url),
            payload=payload,
        )
        channel = self.email if delivery.channel == "email" else self.webhook
        async with self._gate:
            try:
                outcome = await channel.send(outgoing)
            except Exception as error:  # a channel bug must not lose the claimed batch
                log.exception("dispatch.channel_error", channel=delivery.channel)
                outcome = Outcome(False, f"{type(error).__name__}: {error}")
        return _Sent(delivery, message, outcome)

    async def _write_back(
        self, decided: list[_Decided], sent: list[_Sent], lease: datetime
    ) -> None:
        """Write the outcomes of the rows this dispatcher still holds. One paused past its
        lease (a long GC, SIGSTOP, a slow network) finds its rows taken over, and perhaps
        finished, by another: writing over them would put a delivered message back to
        ``sending`` for ever, or a delivered one to ``failed``."""
        now = self.clock.now()
        settings = self.settings
        async with self.database.transaction() as session:
            repository = MessageRepository(session)
            held_messages = await repository.still_leased(
                Message, {item.message.id for item in decided}, lease
            )
            held_deliveries = await repository.still_leased(
                Delivery, {item.delivery.id for item in sent}, lease
            )
            lost = len(decided) - len(held_messages) + len(sent) - len(held_deliveries)
            if lost:
                log.warning("dispatch.lease_lost", rows=lost)
            decided = [item for item in decided if item.message.id in held_messages]
            sent = [item for item in sent if item.delivery.id in held_deliveries]
            message_rows: list[dict[str, Any]] = []
            delivery_rows: list[dict[str, Any]] = []
            new_deliveries: list[dict[str, Any]] = []
            dead: list[dict[str, Any]] = []
            touched: set[uuid.UUID] = set()
            choices = await repository.choices(
                {
                    (item.message.recipient_organisation, item.message.recipient_role)
                    for item in decided
                }
            )
            for item in decided:
                message = item.message
                row: dict[str, Any] = {"id": message.id, "lease_until": None}
                if item.error is not None:
                    attempts = message.attempts + 1
                    reason = f"the decision point did not answer: {item.error}"
                    row |= {"attempts": attempts, "last_error": reason[:2000]}
                    # 401/403: a token or configuration problem that a fix will cure; 422 and
                    # other 4xx: this request will never be answered, so fail it now.
                    transient = item.error.status >= 500 or item.error.status in {401, 403, 429}
                    if transient and attempts < settings.decision_max_attempts:
                        wait = backoff(
                            attempts,
                            settings.delivery_backoff_base_seconds,
                            settings.delivery_backoff_max_seconds,
                        )
                        row["next_attempt_at"] = now + timedelta(seconds=wait)
                    else:
                        row |= {"status": "failed", "failed_at": now, "next_attempt_at": None}
                        await self._failed(session, message, None, attempts, reason, now)
                    message_rows.append(row)
                    continue
                decision = item.decision
                if decision is not None:
                    row |= {
                        "decision_id": decision.decision_id,
                        "decision": decision.decision.value,
                        "decision_reasons": list(decision.reasons),
                        "lawful_basis": decision.lawful_basis.value
                        if decision.lawful_basis
                        else None,
                    }
                    if decision.decision.value != "share":
                        row |= {"status": "refused", "next_attempt_at": None}
                        message_rows.append(row)
                        log.info("dispatch.refused", message_id=str(message.id))
                        continue
                routes = routes_for(self.routing, choices, message)
                for route in routes:
                    new_deliveries.append(
                        {
                            "id": uuid7(),
                            "message_id": message.id,
                            "channel": route.channel,
                            "address": route.address,
                            "endpoint_id": route.endpoint_id,
                            "webhook_id": f"msg_{uuid.uuid4().hex}",
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": now,
                            "created_at": now,
                        }
                    )
                if routes:
                    row |= {"status": "sending", "next_attempt_at": None}
                else:  # the portal inbox is its only channel: it is there now
                    row |= {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
                message_rows.append(row)
            for outcome_of in sent:
                delivery, outcome = outcome_of.delivery, outcome_of.outcome
                touched.add(delivery.message_id)
                if outcome.delivered:
                    self.sent_total += 1
                    delivery_rows.append(
                        {
                            "id": delivery.id,
                            "status": "delivered",
                            "delivered_at": now,
                            "lease_until": None,
                            "next_attempt_at": None,
                            "last_error": None,
                        }
                    )
                    continue
                error = (outcome.error or "failed")[:2000]
                if outcome.permanent or delivery.attempts >= settings.delivery_max_attempts:
                    delivery_rows.append(
                        {
                            "id": delivery.id,
                            "status": "failed",
                            "failed_at": now,
                            "lease_until": None,
                            "next_attempt_at": None,
                            "last_error": error,
                        }
                    )
                    dead.append(
                        {
                            "id": uuid7(),
                            "delivery_id": delivery.id,
                            "message_id": delivery.message_id,
                            "channel": delivery.channel,
                            "address": delivery.address,
                            "attempts": delivery.attempts,
                            "last_error": error,
                            "failed_at": now,
                        }
                    )
                    message_rows.append(
                        {"id": delivery.message_id, "status": "failed", "failed_at": now}
                    )
                    await self._failed(
                        session, outcome_of.message, delivery.channel, delivery.attempts, error, now
                    )
                    continue
                wait = backoff(
                    delivery.attempts,
                    settings.delivery_backoff_base_seconds,
                    settings.delivery_backoff_max_seconds,
                )
                if outcome.retry_after is not None:
                    wait = max(
                        wait, min(outcome.retry_after, settings.delivery_backoff_max_seconds)
                    )
                delivery_rows.append(
                    {
                        "id": delivery.id,
                        "lease_until": None,
                        "next_attempt_at": now + timedelta(seconds=wait),
                        "last_error": error,
                    }
                )
                log.info(
                    "dispatch.retry",
                    delivery_id=str(delivery.id),
                    attempt=delivery.attempts,
                    retry_in=round(wait, 2),
                    error=error[:200],
                )
            await repository.update_messages(message_rows)
            await repository.add_deliveries(new_deliveries)
            await repository.update_deliveries(delivery_rows)
            await repository.add_dead_letters(dead)
            await repository.settle(touched, now)
        if new_deliveries:
            self._wake.set()  # they are due now

    async def _failed(
        self,
        session: AsyncSession,
        message: Message,
        channel: str | None,
        attempts: int,
        reason: str,
        now: datetime,
    ) -> None:
        log.warning("dispatch.message_failed", message_id=str(message.id), reason=reason[:300])
        trace = context.TraceContext(
            correlation_id=message.correlation_id,
            causation_id=f"message:{message.id}",
            traceparent=context.new_traceparent(),
        )
        with context.bound(trace):
            await self._announce_failure(session, message, channel, attempts, reason, now)

    async def _announce_failure(
        self,
        session: AsyncSession,
        message: Message,
        channel: str | None,
        attempts: int,
        reason: str,
        now: datetime,
    ) -> None:
        await outbox.append(
            session,
            plumbing,
            NotificationFailed(
                message_id=message.id,
                kind=message.kind,
                recipient_organisation=message.recipient_organisation,
                sender_organisation=message.sender_organisation,
                reference=message.reference,
                channel=channel,
                attempts=attempts,
                reason=reason[:2000],
                failed_at=now,
            ),
            service=SERVICE,
            now=now,
        )
