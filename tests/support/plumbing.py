"""A schema of its own for testing the shared plumbing, with a deliberately naive effect table.

``effects`` has no unique constraint: if an event were applied twice, two rows would appear.
That is what makes the exactly-once-in-effect tests able to fail.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from shared import outbox
from shared.consumer import HandlerRegistry
from shared.db import service_metadata
from shared.events import Event
from shared.events.envelope import Envelope
from shared.plumbing import attach_plumbing
from shared.timers import DueTimer, TimerHandler

SCHEMA = "plumbing_test"
TEST_TOPIC = "threadline.test.v1"  # no service reads it; tests key their events by run id

metadata: MetaData = service_metadata(SCHEMA)
plumbing = attach_plumbing(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer", String(200), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("run_id", String(100), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=True), server_default=text("now()")),
)


class ProbeSent(Event, type="test.probe_sent", topic=TEST_TOPIC, key="run_id", producer="tests"):
    """A test event; ``poison`` makes the handler fail every time."""

    run_id: str
    sequence: int
    poison: bool = False


class HandlerFailure(RuntimeError):
    pass


def registry_for(
    consumer: str, run_id: str | None = None, *, outage_deliveries: int = 0
) -> HandlerRegistry:
    """A registry whose handler records one effect row per application.

    With ``outage_deliveries``, the first that many attempts fail as a database outage would.
    """
    registry = HandlerRegistry()
    outage_left = [outage_deliveries]

    @registry.on(ProbeSent)
    async def record_effect(session: AsyncSession, event: ProbeSent, envelope: Envelope) -> None:
        if run_id is not None and event.run_id != run_id:
            return  # another test's event on the shared test topic
        if event.poison:
            raise HandlerFailure(f"cannot apply probe {event.sequence}: poison by design")
        if outage_left[0] > 0:
            outage_left[0] -= 1
            raise OperationalError(
                "INSERT INTO effects", {}, ConnectionRefusedError(111, "refused")
            )
        await session.execute(
            insert(effects).values(
                consumer=consumer,
                event_id=envelope.id,
                run_id=event.run_id,
                sequence=event.sequence,
            )
        )

    return registry


def probe_timer_handler(run_id: str) -> TimerHandler:
    """A timer handler that announces the firing as a probe event through the outbox."""

    async def fire(session: AsyncSession, timer: DueTimer, now: datetime) -> None:
        await outbox.append(
            session,
            plumbing,
            ProbeSent(run_id=run_id, sequence=int(timer.payload.get("sequence", 0))),
            service="tests",
            now=now,
        )

    return fire


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"
