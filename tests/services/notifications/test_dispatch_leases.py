"""A dispatcher paused past its lease (a long GC, SIGSTOP) finds its rows taken over, and
finished, by another; when it wakes it must not write over them. Found by `make chaos`: messages
delivered by the second worker were put back to `sending` by the paused one, for ever."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Insert, func, insert, select

from deploy.local.demo import partnership_section
from services.notifications import routing
from services.notifications.channels import DELIVERED, Outcome, Outgoing
from services.notifications.delivery import Dispatcher
from services.notifications.models import DeadLetter, Delivery, Message
from services.notifications.repository import MessageRepository
from shared.clock import ManualClock
from shared.db import Database
from shared.disclosures import DisclosureDecision, DisclosureRequest
from tests.support.apps import notifications_settings

# Long ago: other tests' messages in the shared database fall due at real times, never by then,
# so the dispatchers here claim only this file's rows.
T0 = datetime(2001, 1, 8, 9, 0, tzinfo=UTC)
ROUTING = f"""
{partnership_section("Lease test")}

[[organisations]]
code = "MASH-DEMO"
name = "Demo MASH"
agency = "mash"
[[organisations.mailboxes]]
address = "manager@mash.example.org"
"""


class Channel:
    """An e-mail channel that answers ``outcome``, after ``release`` when one is given."""

    def __init__(self, outcome: Outcome, release: asyncio.Event | None = None) -> None:
        self.outcome = outcome
        self.release = release
        self.called = asyncio.Event()

    async def send(self, outgoing: Outgoing) -> Outcome:
        self.called.set()
        if self.release is not None:
            await self.release.wait()
        return self.outcome


def _sending_message(message_id: uuid.UUID, test: str) -> Insert:
    """A message to the MASH manager, decided and on its way (``sending``)."""
    return insert(Message).values(
        id=message_id,
        dedupe_key=f"{test}:{message_id}",
        kind="deadline.missed",
        recipient_organisation="MASH-DEMO",
        recipient_agency="mash",
        recipient_role="mash_manager",
        sender_organisation="MASH-DEMO",
        sender_agency="mash",
        subject_ids=[],
        title=f"A {test}",
        body=f"A {test}.",
        details={},
        status="sending",
        attempts=0,
        created_at=T0,
        correlation_id=test,
    )


async def _never(_: DisclosureRequest) -> DisclosureDecision:
    raise AssertionError("no decision: the message discloses nothing")


async def test_a_dispatcher_that_lost_its_lease_does_not_write_over_the_new_holder(
    database: Database, database_url: str, bootstrap: str, tmp_path: Path
) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(ROUTING, encoding="utf-8")
    settings = notifications_settings(database_url, bootstrap, delivery_lease_seconds=5.0)
    message_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(_sending_message(message_id, "lease-test"))
        await session.execute(
            insert(Delivery).values(
                id=delivery_id,
                message_id=message_id,
                channel="email",
                address="manager@mash.example.org",
                webhook_id=f"msg_{uuid.uuid4().hex}",
                status="pending",
                attempts=0,
                next_attempt_at=T0,
                created_at=T0,
            )
        )

    def dispatcher(at: datetime, email: Channel) -> Dispatcher:
        return Dispatcher(
            database,
            routing=routing.load(path),
            settings=settings,
            clock=ManualClock(at),
            decide=_never,
            email=email,  # type: ignore[arg-type]
            webhook=Channel(DELIVERED),  # type: ignore[arg-type]
        )

    # The first claims the delivery and stalls in the send, then comes back with a failure.
    release = asyncio.Event()
    stalled = Channel(Outcome(False, "550 no such mailbox", permanent=True), release)
    first = asyncio.create_task(dispatcher(T0, stalled).dispatch_once())
    await asyncio.wait_for(stalled.called.wait(), timeout=10)

    # Its lease expires; the second takes the delivery over and delivers it.
    later = T0 + timedelta(seconds=settings.delivery_lease_seconds + 1)
    assert await dispatcher(later, Channel(DELIVERED)).dispatch_once() == 1

    release.set()
    await asyncio.wait_for(first, timeout=10)

    async with database.transaction() as session:
        message = await session.get(Message, message_id)
        delivery = await session.get(Delivery, delivery_id)
        dead = await session.scalar(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.message_id == message_id)
        )
    assert message is not None and delivery is not None
    assert (delivery.status, message.status) == ("delivered", "delivered")
    assert dead == 0


async def test_two_deliveries_of_a_message_finishing_at_once_settle_it(
    database: Database,
) -> None:
    """Regression (found by `make chaos`): the e-mail and the webhook of one message delivered
    by two workers at once left it in `sending` for ever (each saw the other still pending)."""
    message_id = uuid.uuid4()
    deliveries = {"email": uuid.uuid4(), "webhook": uuid.uuid4()}
    async with database.transaction() as session:
        await session.execute(_sending_message(message_id, "settle-test"))
        for channel, delivery_id in deliveries.items():
            await session.execute(
                insert(Delivery).values(
                    id=delivery_id,
                    message_id=message_id,
                    channel=channel,
                    address=f"{channel}-address",
                    webhook_id=f"msg_{uuid.uuid4().hex}",
                    status="pending",
                    attempts=1,
                    created_at=T0,
                )
            )

    first_done = asyncio.Event()

    async def deliver(channel: str, hold: bool) -> None:
        async with database.transaction() as session:
            repository = MessageRepository(session)
            await repository.update_deliveries(
                [{"id": deliveries[channel], "status": "delivered", "delivered_at": T0}]
            )
            await repository.settle({message_id}, T0)
            if hold:
                first_done.set()
                await asyncio.sleep(0.5)  # the other settles meanwhile

    async def second() -> None:
        await first_done.wait()
        await deliver("webhook", hold=False)

    await asyncio.wait_for(asyncio.gather(deliver("email", hold=True), second()), timeout=20)

    async with database.transaction() as session:
        message = await session.get(Message, message_id)
    assert message is not None and message.status == "delivered"
