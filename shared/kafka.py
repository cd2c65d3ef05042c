"""Kafka clients with Threadline's delivery guarantees set on purpose, never by default.

aiokafka's defaults lose or skip events for this use: the producer waits for the leader alone,
without idempotence; the consumer commits automatically, starts a new group at the end of the
topic and reads uncommitted records. Every client in Threadline is made here, with each of those
set on purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events.topics import Topic, dead_letter_topic


def make_producer(bootstrap_servers: str, *, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",  # every in-sync replica has the event before we mark it sent
        enable_idempotence=True,  # a retried send is written once, in order
        linger_ms=5,
        request_timeout_ms=15000,
    )


def make_consumer(
    bootstrap_servers: str,
    *,
    group_id: str,
    client_id: str,
    topics: Iterable[str] = (),
    max_poll_records: int = 100,
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,  # offsets are committed only after the DB transaction
        auto_offset_reset="earliest",  # a new group reads what was published before it existed
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str] | None = None,
    *,
    partitions: int = 3,
    dlq_partitions: int = 1,
    replication_factor: int = 1,
) -> list[str]:
    """Create each topic and its ``.dlq`` if missing; return the names created."""
    names = [topic.value for topic in Topic] if topics is None else list(topics)
    wanted = [NewTopic(name, partitions, replication_factor) for name in names] + [
        NewTopic(dead_letter_topic(name), dlq_partitions, replication_factor) for name in names
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="threadline-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # Another process may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()
