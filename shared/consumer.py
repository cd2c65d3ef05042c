"""The consumer runner: at-least-once delivery made exactly-once in effect.

For each record: decode the CloudEvent; in one database transaction, insert its id into the inbox
(a redelivered id is a no-op) and apply the handler's effect; commit; only then commit the Kafka
offset. A handler that keeps failing is retried with backoff, then the record goes to
``<topic>.dlq`` with the error, the inbox remembers it as dead-lettered, and the consumer moves on.

Under load the records a fetch returns for one partition are applied together: one transaction,
one inbox statement for all of them, the handlers in offset order, one commit. If anything in
that transaction fails, it rolls back whole and the records are applied again one at a time
(with the retries and the dead-letter queue above), so a bad record never takes good ones with
it and the order of a partition's records is kept either way.

Offsets are committed after the database commits of the records they cover, once a fetch comes
back empty and, while records keep coming, at most once per ``commit_interval`` (1 s).
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from shared import context
from shared.db import Database, prebuilt_insert
from shared.events.envelope import Envelope, EnvelopeError, from_kafka
from shared.events.registry import Event, spec_for_type
from shared.events.topics import dead_letter_topic
from shared.faults import fault_point
from shared.logging import get_logger
from shared.plumbing import Plumbing

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[tuple[Any, Envelope]]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    event_type: str
    handler: Handler


@dataclass
class HandlerRegistry:
    """Event type → handler, declared explicitly by each service's ``consumers.py``."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    # Optional: applies a fetched batch's new events (in offset order) in one go, for a
    # projection that writes each table once per batch rather than once per event. It must
    # have the same effect as the handlers one by one; single records still use the handlers.
    batch: BatchHandler | None = None

    def on(self, event_class: type[Event]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if event_class.event_type in self.handlers:
                raise ValueError(f"two handlers for {event_class.event_type}")
            self.handlers[event_class.event_type] = handler
            return handler

        return register

    def topics(self) -> list[str]:
        found = {str(spec.topic) for t in self.handlers if (spec := spec_for_type(t))}
        return sorted(found)


class PermanentError(Exception):
    """An error that retrying cannot fix (e.g. an event that fails its schema)."""


def is_transient(error: BaseException) -> bool:
    """Infrastructure trouble (database or network down), not the event's fault.

    Such errors are retried for as long as they last and never dead-letter an event: a
    PostgreSQL restart must not send good events to the DLQ.
    """
    if isinstance(error, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    )


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.runner.commit_done(only=set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


_INBOX_ROW = (
    "consumer",
    "event_id",
    "event_type",
    "topic",
    "partition",
    "kafka_offset",
    "outcome",
    "error",
)


@dataclass(frozen=True)
class _Prepared:
    record: ConsumerRecord[bytes, bytes]
    envelope: Envelope
    handler: Handler


class ConsumerRunner:
    """Runs one consumer group for one service."""

    def __init__(
        self,
        *,
        name: str,
        database: Database,
        plumbing: Plumbing,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        registry: HandlerRegistry,
        topics: list[str] | None = None,
        max_attempts: int = 5,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
        max_batch: int = 100,
        commit_interval: float = 1.0,
    ) -> None:
        self.name = name
        self.database = database
        self.plumbing = plumbing
        self.consumer = consumer
        self.producer = producer
        self.registry = registry
        self.topics = topics if topics is not None else registry.topics()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_batch = max_batch
        self.commit_interval = commit_interval
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        # One inbox INSERT for a whole fetch, built once: an executemany that SQLAlchemy sends
        # as multi-row INSERTs ("insertmanyvalues"), each returning the ids that were new.
        inbox = plumbing.inbox
        self._remember_statement = (
            prebuilt_insert(inbox, _INBOX_ROW)
            .on_conflict_do_nothing(index_elements=[inbox.c.consumer, inbox.c.event_id])
            .returning(inbox.c.event_id)
        )
        self.applied = 0
        self.offset_commits = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> None:
        """Consume until cancelled. The caller starts and stops the Kafka clients."""
        self.consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
        clock = asyncio.get_running_loop().time
        last_commit = clock()
        while not self.stopping:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.max_batch)
            for partition, records in batches.items():
                await self.process_many(records)
                self._done[partition] = records[-1].offset + 1
            # Offsets are committed once the fetch goes quiet, and under load at most once per
            # commit_interval: each commit is a round trip to the group coordinator (8% of the
            # timeline consumer's loop at 1,000 events/s). A crash before one redelivers at most
            # that much, which the inbox makes a no-op.
            if self._done and (not batches or clock() - last_commit >= self.commit_interval):
                await self.commit_done()
                last_commit = clock()

    def lag(self) -> int:
        """Records behind the high-water mark across assigned partitions (for /metrics)."""
        total = 0
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            position = self._done.get(partition)
            if highwater is None or position is None:
                continue  # nothing fetched from this partition yet
            total += max(0, highwater - position)
        return total

    async def commit_done(self, only: set[TopicPartition] | None = None) -> None:
        """Commit the offsets of records whose effects are committed in the database."""
        offsets = {
            partition: offset
            for partition, offset in self._done.items()
            if only is None or partition in only
        }
        offsets = {p: o for p, o in offsets.items() if self._committed.get(p) != o}
        if offsets:
            await self.consumer.commit(offsets)
            self._committed.update(offsets)
            self.offset_commits += 1
        if only is not None:
            for partition in only:
                self._done.pop(partition, None)
                self._committed.pop(partition, None)

    async def process_many(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply one partition's fetched records in order, in one transaction when they can be."""
        if len(records) == 1:
            await self.process(records[0])
            return
        prepared: list[_Prepared] = []
        for record in records:
            try:
                envelope = from_kafka(record.key, record.value, record.headers)
            except EnvelopeError as error:
                await self._dead_letter(record, None, f"EnvelopeError: {error}")
                continue  # no effect, so applying it out of turn changes nothing
            handler = self.registry.handlers.get(envelope.type)
            if handler is None:
                continue  # another service's event on a shared topic
            prepared.append(_Prepared(record, envelope, handler))
        if not prepared:
            return
        try:
            applied, duplicates = await self._apply_batch(prepared)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.info(
                "consumer.batch_fallback", consumer=self.name, size=len(prepared), error=repr(error)
            )
            for item in prepared:
                await self.process(item.record)
            return
        self.applied += applied
        self.duplicates += duplicates

    async def _apply_batch(self, prepared: list[_Prepared]) -> tuple[int, int]:
        payloads = [self._payload(item.envelope) for item in prepared]
        applied = duplicates = 0
        async with self.database.transaction() as session:
            first_time = await self._remember_many(session, prepared)
            fresh: list[tuple[Any, Envelope]] = []
            for item, payload in zip(prepared, payloads, strict=True):
                if item.envelope.id not in first_time:
                    log.info(
                        "consumer.duplicate",
                        event_id=str(item.envelope.id),
                        type=item.envelope.type,
                    )
                    duplicates += 1
                    continue
                first_time.discard(item.envelope.id)  # the same event twice in one fetch
                if self.registry.batch is not None:
                    fresh.append((payload, item.envelope))
                else:
                    with context.bound(item.envelope.trace()):
                        await item.handler(session, payload, item.envelope)
                applied += 1
            if fresh and self.registry.batch is not None:
                with context.bound(fresh[0][1].trace()):
                    await self.registry.batch(session, fresh)
        fault_point("consumer.after_db_commit")
        return applied, duplicates

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one record exactly once in effect; never raises for a bad record."""
        try:
            envelope = from_kafka(record.key, record.value, record.headers)
        except EnvelopeError as error:
            await self._dead_letter(record, None, f"EnvelopeError: {error}")
            return
        handler = self.registry.handlers.get(envelope.type)
        if handler is None:
            return  # another service's event on a shared topic
        attempt = 0
        outage = 0
        while True:
            attempt += 1
            try:
                outcome = await self._apply(record, envelope, handler)
            except asyncio.CancelledError:
                raise
            except PermanentError as error:
                await self._dead_letter(record, envelope, _describe(error))
                return
            except Exception as error:
                if is_transient(error):
                    attempt -= 1  # not the event's fault: does not count towards the DLQ
                    outage += 1
                    delay = min(self.backoff_max, self.backoff * 2 ** min(outage, 10))
                    log.warning(
                        "consumer.infrastructure_unavailable",
                        consumer=self.name,
                        event_id=str(envelope.id),
                        retry_in=round(delay, 2),
                        error=repr(error),
                    )
                    await asyncio.sleep(delay)
                    continue
                if attempt >= self.max_attempts:
                    await self._dead_letter(record, envelope, _describe(error))
                    return
                delay = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not security
                log.warning(
                    "consumer.retry",
                    consumer=self.name,
                    event_id=str(envelope.id),
                    event_type=envelope.type,
                    attempt=attempt,
                    error=repr(error),
                )
                await asyncio.sleep(delay)
                continue
            if outcome:
                self.applied += 1
            else:
                self.duplicates += 1
            return

    async def _apply(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope, handler: Handler
    ) -> bool:
        payload = self._payload(envelope)
        with context.bound(envelope.trace()):
            async with self.database.transaction() as session:
                first_time = await self._remember(session, record, envelope, "applied", None)
                if not first_time:
                    log.info("consumer.duplicate", event_id=str(envelope.id), type=envelope.type)
                    return False
                await handler(session, payload, envelope)
            fault_point("consumer.after_db_commit")
            log.debug("consumer.applied", event_id=str(envelope.id), type=envelope.type)
        return True

    @staticmethod
    def _payload(envelope: Envelope) -> Any:
        spec = spec_for_type(envelope.type)
        if spec is None:
            return envelope.data
        try:
            return spec.schema.model_validate(envelope.data)
        except ValueError as error:
            raise PermanentError(f"event data fails {spec.type} schema: {error}") from error

    async def _remember_many(self, session: AsyncSession, prepared: list[_Prepared]) -> set[Any]:
        """Record every event in the inbox in one statement; returns the ids not seen before."""
        result = await session.execute(
            self._remember_statement,
            [
                {
                    "consumer": self.name,
                    "event_id": item.envelope.id,
                    "event_type": item.envelope.type,
                    "topic": item.record.topic,
                    "partition": item.record.partition,
                    "kafka_offset": item.record.offset,
                    "outcome": "applied",
                    "error": None,
                }
                for item in prepared
            ],
        )
        return set(result.scalars())

    async def _remember(
        self,
        session: AsyncSession,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope,
        outcome: str,
        error: str | None,
    ) -> bool:
        inbox = self.plumbing.inbox
        result = await session.execute(
            pg_insert(inbox)
            .values(
                consumer=self.name,
                event_id=envelope.id,
                event_type=envelope.type,
                topic=record.topic,
                partition=record.partition,
                kafka_offset=record.offset,
                outcome=outcome,
                error=error,
            )
            .on_conflict_do_nothing(index_elements=[inbox.c.consumer, inbox.c.event_id])
            .returning(inbox.c.event_id)
        )
        return result.first() is not None

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], envelope: Envelope | None, error: str
    ) -> None:
        headers = [
            *list(record.headers),
            ("dlq_error", error.encode()[:8000]),
            ("dlq_consumer", self.name.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
        ]
        delivery = await self.producer.send(
            dead_letter_topic(record.topic), value=record.value, key=record.key, headers=headers
        )
        await delivery
        if envelope is not None:
            # Redelivery of a dead-lettered event is then a no-op rather than a second DLQ entry.
            async with self.database.transaction() as session:
                await self._remember(session, record, envelope, "dead_lettered", error[:8000])
        self.dead_lettered += 1
        log.error(
            "consumer.dead_lettered",
            consumer=self.name,
            topic=record.topic,
            offset=record.offset,
            event_id=str(envelope.id) if envelope else None,
            error=error[:500],
        )


def _describe(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip()
