"""``threadline timeline rebuild``: the whole read model again, from the topics.

The projection is replayed from the beginning of every topic it reads, up to the offsets that
were the end when the rebuild started (read_committed: the last stable offsets), into a schema of
its own (``timeline_rebuild``) beside the live one, with the same handlers and the same
exactly-once rule (an inbox of event ids). Then:

- it compares the rebuilt tables with the live ones, row for row (``EXCEPT ALL`` both ways), and
  reports the differences; when the live consumer has applied the same events they are none;
- with ``swap``, and only while no timeline consumer is running (the consumer group has no
  members), it replaces the live rows with the rebuilt ones in one transaction, adds the
  rebuild's inbox to the live inbox, and moves the group's offsets to where the rebuild stopped,
  so the service resumes from there and applies each later event once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.timeline.consumers import build_registry
from services.timeline.models import READ_MODEL, SCHEMA
from shared.consumer import HandlerRegistry, PermanentError
from shared.db import Database
from shared.events.envelope import EnvelopeError, from_kafka
from shared.events.registry import spec_for_type
from shared.logging import get_logger

log = get_logger(__name__)

REBUILD_SCHEMA = "timeline_rebuild"
CONSUMER = "threadline.timeline"  # the live consumer group, and the name its inbox rows carry


@dataclass
class RebuildReport:
    events_read: int = 0
    events_applied: int = 0
    duplicates: int = 0
    skipped: int = 0  # not decodable or not valid: the live consumer dead-letters these
    seconds: float = 0.0
    end_offsets: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    differences: dict[str, int] | None = None
    swapped: bool = False

    @property
    def events_per_second(self) -> float:
        return self.events_read / self.seconds if self.seconds else 0.0


async def prepare_schema(database: Database, schema: str = REBUILD_SCHEMA) -> None:
    async with database.transaction() as session:
        await session.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await session.execute(text(f'CREATE SCHEMA "{schema}"'))
        for table in (*READ_MODEL, "inbox"):
            await session.execute(
                text(f"CREATE TABLE {schema}.{table} (LIKE {SCHEMA}.{table} INCLUDING ALL)")
            )


_REMEMBER = (
    "INSERT INTO {schema}.inbox (consumer, event_id, event_type, topic, partition, kafka_offset,"
    " outcome, error) SELECT :consumer, e, t, tp, p, o, 'applied', NULL FROM unnest("
    "CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:topics AS text[]),"
    " CAST(:partitions AS int[]), CAST(:offsets AS bigint[])) AS x(e, t, tp, p, o)"
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)


@dataclass(frozen=True)
class _Item:
    record: ConsumerRecord[bytes, bytes]
    event_id: uuid.UUID
    event_type: str
    payload: Any
    envelope: Any


def _prepare(
    records: Sequence[ConsumerRecord[bytes, bytes]], registry: HandlerRegistry, report: Any
) -> list[_Item]:
    items = []
    for record in records:
        report.events_read += 1
        try:
            envelope = from_kafka(record.key, record.value, record.headers)
        except EnvelopeError:
            report.skipped += 1
            continue
        if envelope.type not in registry.handlers:
            continue
        spec = spec_for_type(envelope.type)
        try:
            payload = spec.schema.model_validate(envelope.data) if spec else envelope.data
        except ValueError:
            report.skipped += 1
            continue
        items.append(_Item(record, envelope.id, envelope.type, payload, envelope))
    return items


async def _apply(
    session: AsyncSession,
    items: Sequence[_Item],
    registry: HandlerRegistry,
    schema: str,
    *,
    isolate: bool,
) -> tuple[int, int, int]:
    fresh = set(
        (
            await session.execute(
                text(_REMEMBER.format(schema=schema)),
                {
                    "consumer": CONSUMER,
                    "ids": [i.event_id for i in items],
                    "types": [i.event_type for i in items],
                    "topics": [i.record.topic for i in items],
                    "partitions": [i.record.partition for i in items],
                    "offsets": [i.record.offset for i in items],
                },
            )
        ).scalars()
    )
    applied = duplicates = failed = 0
    batch: list[tuple[Any, Any]] = []
    for item in items:
        if item.event_id not in fresh:
            duplicates += 1
            continue
        fresh.discard(item.event_id)
        handler = registry.handlers[item.event_type]
        if not isolate:
            batch.append((item.payload, item.envelope))
            applied += 1
            continue
        try:
            async with session.begin_nested():
                await handler(session, item.payload, item.envelope)
            applied += 1
        except (PermanentError, ValueError) as error:
            # what the live consumer would dead-letter after its retries
            log.warning("timeline.rebuild_skipped", event_id=str(item.event_id), error=repr(error))
            failed += 1
    if batch:
        if registry.batch is not None:
            await registry.batch(session, batch)
        else:
            for payload, envelope in batch:
                await registry.handlers[envelope.type](session, payload, envelope)
    return applied, duplicates, failed


async def topic_partitions(bootstrap_servers: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return sorted(
        (
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in topic["partitions"]
        ),
        key=lambda tp: (tp.topic, tp.partition),
    )


async def replay(
    database: Database,
    bootstrap_servers: str,
    *,
    schema: str = REBUILD_SCHEMA,
    progress: Callable[[RebuildReport], None] | None = None,
    batch: int = 2000,
) -> RebuildReport:
    """Fill ``schema`` from the topics, up to the end offsets as they are now."""
    report = RebuildReport()
    registry = build_registry(schema)
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=batch,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(bootstrap_servers, registry.topics())
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        report.end_offsets = {f"{tp.topic}:{tp.partition}": offset for tp, offset in end.items()}
        remaining = {tp for tp in partitions if end[tp] > 0}
        last_progress = time.perf_counter()
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch)
            for tp, records in fetched.items():
                records = [r for r in records if r.offset < end[tp]]
                items = _prepare(records, registry, report)
                if items:
                    try:
                        async with database.transaction() as session:
                            counts = await _apply(session, items, registry, schema, isolate=False)
                    except (PermanentError, ValueError):
                        async with database.transaction() as session:
                            counts = await _apply(session, items, registry, schema, isolate=True)
                    report.events_applied += counts[0]
                    report.duplicates += counts[1]
                    report.skipped += counts[2]
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if progress and time.perf_counter() - last_progress > 5:
                report.seconds = time.perf_counter() - started
                progress(report)
                last_progress = time.perf_counter()
    finally:
        await consumer.stop()
    report.seconds = time.perf_counter() - started
    async with database.transaction() as session:
        for table in READ_MODEL:
            count = (await session.execute(text(f"SELECT count(*) FROM {schema}.{table}"))).scalar()
            report.rows[table] = int(count or 0)
    return report


async def compare(
    database: Database, schema: str = REBUILD_SCHEMA, against: str = SCHEMA
) -> dict[str, int]:
    """Rows in one model and not the other, per table (0 everywhere: the models are equal)."""
    out = {}
    async with database.transaction() as session:
        for table in READ_MODEL:
            count = (
                await session.execute(
                    text(
                        f"SELECT count(*) FROM ((TABLE {against}.{table} EXCEPT ALL"
                        f" TABLE {schema}.{table}) UNION ALL (TABLE {schema}.{table}"
                        f" EXCEPT ALL TABLE {against}.{table})) AS difference"
                    )
                )
            ).scalar()
            out[table] = int(count or 0)
    return out


class ConsumerRunning(Exception):
    """The live timeline consumer is running: a swap would race it."""


async def swap(
    database: Database, bootstrap_servers: str, report: RebuildReport, schema: str = REBUILD_SCHEMA
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([CONSUMER])
    finally:
        await admin.close()
    members = _members(described)
    if members:
        raise ConsumerRunning(
            f"{members} timeline consumer(s) are running; stop the timeline service (and any "
            "`threadline work timeline`) before swapping"
        )
    async with database.transaction() as session:
        for table in READ_MODEL:
            await session.execute(text(f"TRUNCATE {SCHEMA}.{table}"))
            await session.execute(
                text(f"INSERT INTO {SCHEMA}.{table} SELECT * FROM {schema}.{table}")
            )
        await session.execute(
            text(
                f"INSERT INTO {SCHEMA}.inbox SELECT * FROM {schema}.inbox"
                " ON CONFLICT (consumer, event_id) DO NOTHING"
            )
        )
    offsets = {}
    for key, offset in report.end_offsets.items():
        topic, partition = key.rsplit(":", 1)
        offsets[TopicPartition(topic, int(partition))] = offset
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=CONSUMER,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await committer.start()
    try:
        committer.assign(list(offsets))
        await committer.commit(offsets)
    finally:
        await committer.stop()
    report.swapped = True


def _members(described: Any) -> int:
    """Members of the group in a DescribeGroups response (aiokafka returns the raw responses)."""
    count = 0
    for response in described if isinstance(described, list) else [described]:
        groups = getattr(response, "groups", None)
        if groups is None:
            continue
        for group in groups:
            # (error_code, group_id, state, protocol_type, protocol, members[, ...])
            members = group[5] if len(group) > 5 else []
            count += len(members)
    return count


async def rebuild(
    database_url: str,
    bootstrap_servers: str,
    *,
    do_swap: bool = False,
    progress: Callable[[RebuildReport], None] | None = None,
) -> RebuildReport:
    database = Database(database_url, application_name="threadline-timeline-rebuild")
    try:
        await prepare_schema(database)
        report = await replay(database, bootstrap_servers, progress=progress)
        report.differences = await compare(database)
        if do_swap:
            await swap(database, bootstrap_servers, report)
        return report
    finally:
        await database.dispose()
