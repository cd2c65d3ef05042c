"""The transactional outbox and its relay to Kafka.

``append`` writes an event in the caller's transaction, so a state change and the event that
announces it commit together or not at all. The relay claims unpublished rows with
``FOR UPDATE SKIP LOCKED`` and a lease, publishes them with the idempotent producer and marks them
published. A crash between publish and mark republishes the same event id after the lease runs
out: delivery is at-least-once and consumers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared import context
from shared.clock import Clock, SystemClock
from shared.db import Database, asyncpg_dsn
from shared.events.envelope import Envelope, envelope_for, envelope_from_attributes, to_kafka
from shared.events.registry import Event, spec_for
from shared.faults import fault_point
from shared.logging import get_logger
from shared.plumbing import Plumbing

log = get_logger(__name__)
OUTBOX_COLUMNS = ("event_id", "topic", "partition_key", "event_type", "attributes", "data")


async def append(
    session: AsyncSession,
    plumbing: Plumbing,
    event: Event,
    *,
    service: str,
    now: datetime,
) -> Envelope:
    """Add ``event`` to the outbox inside the session's transaction and wake the relay on commit."""
    envelope = envelope_for(event, service=service, trace=context.current(), now=now)
    await session.execute(
        insert(plumbing.outbox).values(
            event_id=envelope.id,
            topic=str(spec_for(event).topic),
            partition_key=envelope.subject,
            event_type=envelope.type,
            attributes=envelope.attributes(),
            data=envelope.data,
        )
    )
    # NOTIFY inside a transaction is delivered only when it commits: no wake-up for a rollback.
    await session.execute(
        text("SELECT pg_notify(:channel, '')"), {"channel": plumbing.notify_channel}
    )
    return envelope


def outbox_row(event: Event, *, service: str, now: datetime) -> list[Any]:
    """``event`` as the values of one outbox row (``OUTBOX_COLUMNS``), for a batch writer:
    attributes and data as JSON text (the data straight from pydantic's serializer).

    Call it in the task of the request the event belongs to: it takes that request's trace.
    """
    spec = spec_for(event)
    # The attributes need no data: the data is serialised once, below, by pydantic.
    envelope = envelope_for(event, service=service, trace=context.current(), now=now, data={})
    return [
        envelope.id,
        str(spec.topic),
        envelope.subject,
        envelope.type,
        json.dumps(envelope.attributes()),
        event.model_dump_json(),
    ]


async def backlog(session: AsyncSession, plumbing: Plumbing) -> int:
    result = await session.execute(
        select(func.count())
        .select_from(plumbing.outbox)
        .where(plumbing.outbox.c.published_at.is_(None))
    )
    return int(result.scalar_one())


# The idempotent producer cannot recover from these: aiokafka's sender stops for good (e.g. a
# broker restarted without the producer's sequence state: OutOfOrderSequenceNumber), and every
# later send fails. Only a new producer (a new producer id, sequences from 0) publishes again.
BROKEN_PRODUCER = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    InvalidProducerEpoch,
)

NewProducer = Callable[[], Awaitable[AIOKafkaProducer]]


class OutboxRelay:
    """Publishes one schema's outbox to Kafka; several relays may run at once."""

    def __init__(
        self,
        database: Database,
        plumbing: Plumbing,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 200,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 2.0,
        clock: Clock | None = None,
        new_producer: NewProducer | None = None,
    ) -> None:
        self.database = database
        self.plumbing = plumbing
        self.producer = producer
        # Makes (and starts) a replacement when the producer breaks for good (BROKEN_PRODUCER).
        self.new_producer = new_producer
        self._own_producer: AIOKafkaProducer | None = None  # a replacement, stopped with us
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.clock = clock or SystemClock()
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self.published_total = 0
        self.leading = False
        self.stopping = False

    def stop(self) -> None:
        """Ask the relay to finish: it leaves its loop and gives up leadership.

        Not only cancellation: a cancel that a client library swallows must not leave a relay
        looping on a closed producer while it holds the schema's leader lock.
        """
        self.stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled.

        Only the relay holding the schema's advisory lock publishes, so one aggregate's events
        reach Kafka in the order they were written even when several replicas run; the others
        wait as standbys. The lock lives on the LISTEN connection: if the leader dies, PostgreSQL
        drops its session and the lock with it, and a standby takes over.
        """
        try:
            while not self.stopping:
                leader = await self._lead()
                if leader is None:
                    await asyncio.sleep(self.poll_interval)
                    continue
                try:
                    await self._relay_while_leading(leader)
                finally:
                    await _close_quickly(leader)
                if not self.stopping:
                    await asyncio.sleep(0.5)  # lost the lock: let a standby take it first
        finally:
            if self._own_producer is not None:
                with contextlib.suppress(Exception):
                    await self._own_producer.stop()

    async def _renew_producer(self, error: Exception) -> None:
        """Replace a producer that can never publish again (``BROKEN_PRODUCER``)."""
        log.warning("outbox.producer_broken", error=repr(error), schema=self.plumbing.schema)
        if self.new_producer is None:
            return
        try:
            replacement = await self.new_producer()
        except Exception as failure:  # Kafka may still be away: try again on the next error
            log.warning("outbox.producer_renew_failed", error=repr(failure))
            return
        if self._own_producer is not None:
            with contextlib.suppress(Exception):
                await self._own_producer.stop()
        self.producer = self._own_producer = replacement
        log.info("outbox.producer_renewed", schema=self.plumbing.schema)

    async def _lead(self) -> asyncpg.Connection | None:
        """A connection that holds the relay lock and listens for NOTIFY, or None."""
        try:
            connection = await asyncpg.connect(asyncpg_dsn(self.database.url))
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("outbox.database_unavailable", error=repr(error))
            return None
        try:
            leading = await connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"outbox-relay:{self.plumbing.schema}"
            )
            if not leading:
                await connection.close()
                return None
            await connection.add_listener(self.plumbing.notify_channel, self._on_notify)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("outbox.lead_failed", error=repr(error))
            with contextlib.suppress(Exception):
                await connection.close()
            return None
        self.leading = True
        log.info("outbox.leading", schema=self.plumbing.schema, relay=self.owner)
        return connection

    async def _relay_while_leading(self, leader: asyncpg.Connection) -> None:
        try:
            while not leader.is_closed() and not self.stopping:
                try:
                    published = await self.relay_once()
                except asyncio.CancelledError:
                    raise
                except ProducerClosed:
                    # This producer can never publish again (the service is stopping): stop for
                    # good, so that the leader lock goes to a relay that can.
                    self.stopping = True
                    return
                except BROKEN_PRODUCER as error:
                    await self._renew_producer(error)
                    await asyncio.sleep(1.0)
                    continue
                except Exception as error:  # keep relaying: Kafka or the DB may come back
                    log.warning(
                        "outbox.relay_failed", error=repr(error), schema=self.plumbing.schema
                    )
                    await asyncio.sleep(1.0)
                    continue
                if published >= self.batch_size:
                    continue  # more is waiting
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
                # The lock is only as good as its session: check it is still alive.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(leader.fetchval("SELECT 1"), timeout=5)
        finally:
            self.leading = False

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Claim, publish and mark one batch; returns how many events were published."""
        claimed = await self._claim()
        if not claimed:
            return 0
        records = [
            (row, to_kafka(envelope_from_attributes(row.attributes, row.data))) for row in claimed
        ]
        try:
            # send() enqueues in order and returns a delivery future; the idempotent producer keeps
            # one key's events in order even when it retries.
            deliveries = [
                await self.producer.send(
                    row.topic, value=record.value, key=record.key, headers=record.headers
                )
                for row, record in records
            ]
            await asyncio.gather(*deliveries)
        except Exception as error:
            await self._release([row.seq for row, _ in records], repr(error))
            raise
        fault_point("relay.after_publish")
        await self._mark_published([row.seq for row, _ in records])
        self.published_total += len(records)
        return len(records)

    async def _claim(self) -> list[Any]:
        outbox = self.plumbing.outbox
        now = self.clock.now()
        async with self.database.transaction() as session:
            candidates = (
                select(outbox.c.seq)
                .where(outbox.c.published_at.is_(None))
                .where((outbox.c.lease_until.is_(None)) | (outbox.c.lease_until < now))
                .order_by(outbox.c.seq)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            result = await session.execute(
                update(outbox)
                .where(outbox.c.seq.in_(candidates.scalar_subquery()))
                .values(
                    lease_owner=self.owner,
                    lease_until=now + self.lease,
                    attempts=outbox.c.attempts + 1,
                )
                .returning(outbox.c.seq, outbox.c.topic, outbox.c.attributes, outbox.c.data)
            )
            rows = sorted(result.all(), key=lambda row: row.seq)
        return rows

    async def _release(self, seqs: list[int], error: str) -> None:
        """Give claimed rows back at once after a failed publish, so a retry need not wait."""
        outbox = self.plumbing.outbox
        async with self.database.transaction() as session:
            await session.execute(
                update(outbox)
                .where(outbox.c.seq.in_(seqs))
                .where(outbox.c.lease_owner == self.owner)
                .values(lease_until=None, last_error=error[:2000])
            )

    async def _mark_published(self, seqs: list[int]) -> None:
        outbox = self.plumbing.outbox
        async with self.database.transaction() as session:
            await session.execute(
                update(outbox)
                .where(outbox.c.seq.in_(seqs))
                .where(outbox.c.lease_owner == self.owner)
                .values(published_at=self.clock.now(), lease_until=None, last_error=None)
            )


async def _close_quickly(connection: asyncpg.Connection) -> None:
    """Close the lock connection, and if that does not finish at once, drop it: a relay that is
    stopping must not wait on a query it abandoned (PostgreSQL frees the lock either way)."""
    try:
        await asyncio.wait_for(connection.close(timeout=2), timeout=3)
    except asyncio.CancelledError:
        connection.terminate()
        raise  # the relay is being cancelled: let that finish it
    except Exception:
        connection.terminate()
