"""The outbox: an event is published if and only if its transaction committed, and a relay that
dies at the worst moment loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber
from sqlalchemy import func, select

from shared import outbox
from shared.db import Database
from shared.kafka import make_producer
from shared.outbox import OutboxRelay
from tests.support.kafka import eventually, header, read_topic
from tests.support.plumbing import TEST_TOPIC, ProbeSent, new_run_id, plumbing
from tests.support.processes import Worker


async def append_probes(database: Database, run_id: str, count: int) -> list[uuid.UUID]:
    async with database.transaction() as session:
        return [
            (
                await outbox.append(
                    session,
                    plumbing,
                    ProbeSent(run_id=run_id, sequence=sequence),
                    service="tests",
                    now=datetime.now(UTC),
                )
            ).id
            for sequence in range(count)
        ]


async def unpublished(database: Database, ids: list[uuid.UUID]) -> int:
    async with database.transaction() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(plumbing.outbox)
                .where(plumbing.outbox.c.event_id.in_(ids))
                .where(plumbing.outbox.c.published_at.is_(None))
            )
        )


def ids_of(records: list) -> list[str]:
    return [header(record, "ce_id") or "" for record in records]


async def test_committed_events_are_published_in_order_and_rolled_back_ones_never(
    database: Database, bootstrap: str
) -> None:
    run_id = new_run_id()
    committed = await append_probes(database, run_id, 5)
    with contextlib.suppress(RuntimeError):
        async with database.transaction() as session:
            await outbox.append(
                session,
                plumbing,
                ProbeSent(run_id=run_id, sequence=99),
                service="tests",
                now=datetime.now(UTC),
            )
            raise RuntimeError("the state change failed, so its event must not exist")

    producer = make_producer(bootstrap, client_id="test-relay")
    await producer.start()
    relay = OutboxRelay(database, plumbing, producer, poll_interval=0.2)
    task = asyncio.create_task(relay.run())
    try:
        records = await read_topic(
            bootstrap,
            TEST_TOPIC,
            keep=lambda r: r.key == run_id.encode(),
            until=lambda found: len(found) >= 5,
        )
        await asyncio.sleep(1.0)  # give a stray sixth event the chance to appear
        records = await read_topic(
            bootstrap,
            TEST_TOPIC,
            keep=lambda r: r.key == run_id.encode(),
            until=lambda found: len(found) >= 5,
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()

    assert ids_of(records) == [str(event_id) for event_id in committed]
    assert await unpublished(database, committed) == 0
    assert {header(r, "ce_type") for r in records} == {"test.probe_sent"}
    assert {header(r, "ce_subject") for r in records} == {run_id}


async def test_relay_killed_between_publish_and_mark_loses_nothing(
    database: Database, bootstrap: str, worker_env: dict[str, str], tmp_path
) -> None:
    run_id = new_run_id()
    ids = await append_probes(database, run_id, 20)

    crashing = Worker(
        ["relay", "--lease-seconds", "2"],
        {**worker_env, "THREADLINE_FAULTS": "relay.after_publish"},
        tmp_path / "relay-crash.log",
    )
    code = await asyncio.to_thread(crashing.wait, 60)
    assert code == -signal.SIGKILL, crashing.output()
    # The worst moment: Kafka has the events, the outbox does not know it.
    published_before_mark = await read_topic(
        bootstrap,
        TEST_TOPIC,
        keep=lambda r: r.key == run_id.encode(),
        until=lambda found: len(found) >= 20,
    )
    assert set(ids_of(published_before_mark)) == {str(i) for i in ids}
    assert await unpublished(database, ids) == 20

    with Worker(["relay", "--lease-seconds", "2"], worker_env, tmp_path / "relay.log") as relay:
        for _ in range(150):
            if await unpublished(database, ids) == 0:
                break
            await asyncio.sleep(0.2)
        assert await unpublished(database, ids) == 0, relay.output()

    records = await read_topic(
        bootstrap,
        TEST_TOPIC,
        keep=lambda r: r.key == run_id.encode(),
        until=lambda found: len(found) >= 40,
    )
    delivered = Counter(ids_of(records))
    assert set(delivered) == {str(i) for i in ids}, "an event was lost"
    # At-least-once: the restarted relay sent them again with the same ids, for the inbox to drop.
    assert all(count == 2 for count in delivered.values())


async def test_backlog_counts_events_not_yet_published(database: Database) -> None:
    async with database.transaction() as session:
        before = await outbox.backlog(session, plumbing)
    await append_probes(database, new_run_id(), 3)
    async with database.transaction() as session:
        assert await outbox.backlog(session, plumbing) == before + 3


async def test_one_relay_leads_so_an_aggregates_events_stay_in_order_and_a_standby_takes_over(
    database: Database, bootstrap: str
) -> None:
    run_id = new_run_id()
    producer = make_producer(bootstrap, client_id="test-relays")
    await producer.start()
    relays = [OutboxRelay(database, plumbing, producer, poll_interval=0.2) for _ in range(3)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]

    async def one_leader() -> bool:
        return sum(relay.leading for relay in relays) == 1

    try:
        await eventually(one_leader, timeout=10)
        for sequence in range(30):  # thirty separate state changes of one aggregate
            async with database.transaction() as session:
                await outbox.append(
                    session,
                    plumbing,
                    ProbeSent(run_id=run_id, sequence=sequence),
                    service="tests",
                    now=datetime.now(UTC),
                )
        records = await read_topic(
            bootstrap,
            TEST_TOPIC,
            keep=lambda r: r.key == run_id.encode(),
            until=lambda found: len(found) >= 30,
        )
        assert [json.loads(r.value)["sequence"] for r in records] == list(range(30))

        leader = next(i for i, relay in enumerate(relays) if relay.leading)
        tasks[leader].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[leader]
        await eventually(one_leader, timeout=10)
        assert not relays[leader].leading
        await append_probes(database, run_id, 1)
        await read_topic(
            bootstrap,
            TEST_TOPIC,
            keep=lambda r: r.key == run_id.encode(),
            until=lambda found: len(found) >= 31,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


async def test_a_stopped_relay_or_one_whose_producer_closed_gives_up_leadership(
    database: Database, bootstrap: str
) -> None:
    """Regression: a relay whose cancellation was swallowed kept the leader lock and looped on a
    closed producer, so no other relay could publish. Neither path relies on cancellation here."""
    producer = make_producer(bootstrap, client_id="test-relay-stop")
    await producer.start()
    first = OutboxRelay(database, plumbing, producer, poll_interval=0.2)
    task = asyncio.create_task(first.run())
    await eventually(lambda: first.leading, timeout=10)
    first.stop()  # no task.cancel()
    await asyncio.wait_for(task, timeout=10)
    assert not first.leading

    second = OutboxRelay(database, plumbing, producer, poll_interval=0.2)
    task = asyncio.create_task(second.run())
    await eventually(lambda: second.leading, timeout=10)
    published = await append_probes(database, new_run_id(), 1)  # it has been publishing…

    async def relayed() -> bool:
        return await unpublished(database, published) == 0

    await eventually(relayed, timeout=10)
    await producer.stop()  # …when the service shuts down under it
    await append_probes(database, new_run_id(), 1)  # work that cannot be published any more
    await eventually(lambda: not second.leading, timeout=10)

    spare = make_producer(bootstrap, client_id="test-relay-next")
    await spare.start()
    third = OutboxRelay(database, plumbing, spare, poll_interval=0.2)
    third_task = asyncio.create_task(third.run())
    try:
        await eventually(lambda: third.leading, timeout=10)
    finally:
        second.stop()
        third.stop()
        await asyncio.gather(task, third_task, return_exceptions=True)
        await spare.stop()


class BrokenProducer:
    """An idempotent producer after a broker lost its sequence state: aiokafka's sender has
    stopped, and every send fails with the same error for ever."""

    def __init__(self) -> None:
        self.sends = 0

    async def send(self, *_: object, **__: object) -> asyncio.Future[None]:
        self.sends += 1
        raise OutOfOrderSequenceNumber()


async def test_a_relay_whose_producer_broke_for_good_publishes_again_with_a_new_one(
    database: Database, bootstrap: str
) -> None:
    """Regression (found by `make chaos`): after a Kafka broker restart the referrals relay
    failed with OutOfOrderSequenceNumber on every batch until the process was restarted, and
    the outbox grew by every referral accepted meanwhile."""
    broken = BrokenProducer()
    renewed: list[AIOKafkaProducer] = []

    async def new_producer() -> AIOKafkaProducer:
        producer = make_producer(bootstrap, client_id="test-relay-renewed")
        await producer.start()
        renewed.append(producer)
        return producer

    relay = OutboxRelay(
        database,
        plumbing,
        broken,  # type: ignore[arg-type]
        poll_interval=0.2,
        new_producer=new_producer,
    )
    task = asyncio.create_task(relay.run())
    try:
        published = await append_probes(database, new_run_id(), 3)

        async def relayed() -> bool:
            return await unpublished(database, published) == 0

        await eventually(relayed, timeout=20)
        assert broken.sends >= 1
        assert len(renewed) == 1 and relay.producer is renewed[0]
    finally:
        relay.stop()
        await asyncio.wait_for(task, timeout=10)
    assert renewed[0]._closed  # the relay stops the producer it made
