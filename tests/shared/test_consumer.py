"""The consumer runner: redelivery is a no-op, poison goes to the DLQ and the next record is
still processed, and a consumer killed between its DB commit and its offset commit applies
nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select

from shared import context
from shared.consumer import ConsumerRunner
from shared.db import Database
from shared.events.envelope import envelope_for, to_kafka
from shared.events.topics import dead_letter_topic
from shared.kafka import ensure_topics, make_consumer, make_producer
from tests.support.kafka import eventually, header, read_topic
from tests.support.plumbing import (
    ProbeSent,
    effects,
    new_run_id,
    plumbing,
    registry_for,
)
from tests.support.processes import Worker


@pytest.fixture
async def topic(bootstrap: str) -> str:
    """A topic (and its DLQ) of this test's own, so every count below is exact."""
    name = f"threadline.test-{uuid.uuid4().hex[:12]}.v1"
    await ensure_topics(bootstrap, [name], partitions=1)
    return name


async def publish_all(bootstrap: str, topic: str, events: list[ProbeSent]) -> list[uuid.UUID]:
    producer = make_producer(bootstrap, client_id="test-producer")
    await producer.start()
    try:
        return [await publish(producer, event, topic) for event in events]
    finally:
        await producer.stop()


async def publish(producer: AIOKafkaProducer, event: ProbeSent, topic: str) -> uuid.UUID:
    """Publish straight to the topic (as the relay would) and return the event id."""
    envelope = envelope_for(event, service="tests", trace=context.current(), now=datetime.now(UTC))
    record = to_kafka(envelope)
    await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)
    return envelope.id


async def effect_rows(database: Database, run_id: str) -> list[tuple[uuid.UUID, int]]:
    async with database.transaction() as session:
        result = await session.execute(
            select(effects.c.event_id, effects.c.sequence)
            .where(effects.c.run_id == run_id)
            .order_by(effects.c.id)
        )
        return [(row.event_id, row.sequence) for row in result]


@contextlib.asynccontextmanager
async def running_consumer(
    database: Database,
    bootstrap: str,
    run_id: str,
    *,
    topic: str,
    max_attempts: int = 3,
    outage_deliveries: int = 0,
):
    group = f"test-group-{run_id}"
    consumer = make_consumer(bootstrap, group_id=group, client_id="test-consumer")
    producer = make_producer(bootstrap, client_id="test-dlq")
    await consumer.start()
    await producer.start()
    runner = ConsumerRunner(
        name=group,
        database=database,
        plumbing=plumbing,
        consumer=consumer,
        producer=producer,
        registry=registry_for(group, run_id, outage_deliveries=outage_deliveries),
        topics=[topic],
        max_attempts=max_attempts,
        backoff=0.01,
        backoff_max=0.05,
    )
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


async def test_the_same_event_delivered_twice_is_applied_once(
    database: Database, bootstrap: str, topic: str
) -> None:
    run_id = new_run_id()
    producer = make_producer(bootstrap, client_id="test-producer")
    await producer.start()
    try:
        envelope = envelope_for(
            ProbeSent(run_id=run_id, sequence=1),
            service="tests",
            trace=context.current(),
            now=datetime.now(UTC),
        )
        record = to_kafka(envelope)
        for _ in range(2):  # e.g. a relay that crashed before marking the row published
            await producer.send_and_wait(
                topic, record.value, key=record.key, headers=record.headers
            )
        last = await publish(producer, ProbeSent(run_id=run_id, sequence=2), topic)
    finally:
        await producer.stop()

    async with running_consumer(database, bootstrap, run_id, topic=topic) as runner:
        await eventually(lambda: runner.applied + runner.duplicates >= 3)
        assert (runner.applied, runner.duplicates) == (2, 1)

    rows = await effect_rows(database, run_id)
    assert rows == [(envelope.id, 1), (last, 2)]


async def test_poison_goes_to_the_dead_letter_topic_and_the_next_event_is_processed(
    database: Database, bootstrap: str, topic: str
) -> None:
    run_id = new_run_id()
    producer = make_producer(bootstrap, client_id="test-producer")
    await producer.start()
    try:
        first = await publish(producer, ProbeSent(run_id=run_id, sequence=1), topic)
        poison = await publish(producer, ProbeSent(run_id=run_id, sequence=2, poison=True), topic)
        # A record that is not a CloudEvent at all (a misconfigured producer, say).
        await producer.send_and_wait(topic, b"{not json", key=run_id.encode())
        after = await publish(producer, ProbeSent(run_id=run_id, sequence=3), topic)
    finally:
        await producer.stop()

    async with running_consumer(database, bootstrap, run_id, topic=topic, max_attempts=3) as runner:
        await eventually(lambda: runner.dead_lettered + runner.applied >= 4)
        assert (runner.applied, runner.dead_lettered) == (2, 2)

    assert await effect_rows(database, run_id) == [(first, 1), (after, 3)]

    dead = await read_topic(
        bootstrap,
        dead_letter_topic(topic),
        keep=lambda r: r.key == run_id.encode(),
        until=lambda found: len(found) >= 2,
    )
    by_id = {header(r, "ce_id"): r for r in dead}
    poisoned = by_id[str(poison)]
    assert "poison by design" in (header(poisoned, "dlq_error") or "")
    assert header(poisoned, "dlq_source_topic") == topic
    assert poisoned.value is not None and b'"poison":true' in poisoned.value.replace(b" ", b"")
    garbage = by_id[None]
    assert "EnvelopeError" in (header(garbage, "dlq_error") or "")
    assert garbage.value == b"{not json"

    async with database.transaction() as session:
        outcome = await session.scalar(
            select(plumbing.inbox.c.outcome).where(plumbing.inbox.c.event_id == poison)
        )
    assert outcome == "dead_lettered"


async def test_a_database_outage_delays_an_event_but_never_dead_letters_it(
    database: Database, bootstrap: str, topic: str
) -> None:
    run_id = new_run_id()
    [event_id] = await publish_all(bootstrap, topic, [ProbeSent(run_id=run_id, sequence=1)])

    # Ten failed deliveries, more than max_attempts: a handler error would be dead-lettered.
    async with running_consumer(
        database, bootstrap, run_id, topic=topic, max_attempts=3, outage_deliveries=10
    ) as runner:

        async def applied() -> bool:
            return bool(await effect_rows(database, run_id))

        await eventually(applied)
        assert runner.dead_lettered == 0

    assert await effect_rows(database, run_id) == [(event_id, 1)]
    async with database.transaction() as session:
        outcome = await session.scalar(
            select(plumbing.inbox.c.outcome).where(plumbing.inbox.c.event_id == event_id)
        )
    assert outcome == "applied"


async def test_consumer_killed_after_db_commit_before_offset_commit_applies_nothing_twice(
    database: Database, bootstrap: str, worker_env: dict[str, str], tmp_path, topic: str
) -> None:
    run_id = new_run_id()
    group = f"test-crash-{run_id}"
    ids = await publish_all(
        bootstrap, topic, [ProbeSent(run_id=run_id, sequence=n) for n in range(5)]
    )

    args = ["consume", "--group", group, "--run-id", run_id, "--topic", topic]
    crashing = Worker(
        args, {**worker_env, "THREADLINE_FAULTS": "consumer.after_db_commit"}, tmp_path / "c1.log"
    )
    code = await asyncio.to_thread(crashing.wait, 90)
    assert code == -signal.SIGKILL, crashing.output()
    # It died with its first transaction committed (one record, or the batch of records its
    # first fetch returned) and no offset committed.
    committed = [sequence for _, sequence in await effect_rows(database, run_id)]
    assert committed and committed == list(range(len(committed)))

    with Worker(args, worker_env, tmp_path / "c2.log") as restarted:

        async def all_applied_and_the_committed_ones_seen_again() -> bool:
            seen_again = restarted.output().count("consumer.duplicate")
            return len(await effect_rows(database, run_id)) >= 5 and seen_again >= len(committed)

        await eventually(all_applied_and_the_committed_ones_seen_again, timeout=60)
        await asyncio.sleep(0.5)
        output = restarted.output()

    rows = await effect_rows(database, run_id)
    assert sorted(sequence for _, sequence in rows) == [0, 1, 2, 3, 4]
    assert {event_id for event_id, _ in rows} == set(ids)
    assert "consumer.duplicate" in output, "the first event was not redelivered"
    async with database.transaction() as session:
        applied = await session.scalar(
            select(func.count())
            .select_from(plumbing.inbox)
            .where(plumbing.inbox.c.consumer == group)
        )
    assert applied == 5


async def test_offsets_are_committed_after_the_effects_and_at_once_when_the_topic_goes_quiet(
    database: Database, bootstrap: str, topic: str
) -> None:
    run_id = new_run_id()
    sent = await publish_all(
        bootstrap, topic, [ProbeSent(run_id=run_id, sequence=n) for n in range(30)]
    )
    async with running_consumer(database, bootstrap, run_id, topic=topic) as runner:

        async def all_applied() -> bool:
            return len(await effect_rows(database, run_id)) == len(sent)

        await eventually(all_applied, timeout=60)
        partition = TopicPartition(topic, 0)

        async def committed_to_the_end() -> bool:
            return await runner.consumer.committed(partition) == len(sent)

        # Quiet now: the next empty fetch (within half a second) commits what was applied.
        await eventually(committed_to_the_end, timeout=5, every=0.1)
        commits = runner.offset_commits
        assert 1 <= commits <= len(sent)
        await asyncio.sleep(1.5)  # nothing new: nothing more to commit
        assert runner.offset_commits == commits
