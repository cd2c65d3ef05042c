"""Run one relay or consumer of the test schema in its own process, so a test can kill -9 it.

    python -m tests.support.worker relay
    python -m tests.support.worker consume --group G --run-id R
    python -m tests.support.worker timers --kind K --run-id R

Configuration comes from THREADLINE_DATABASE_URL and THREADLINE_KAFKA_BOOTSTRAP_SERVERS; fault
points from THREADLINE_FAULTS (see shared/faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import timedelta

from shared.consumer import ConsumerRunner
from shared.db import Database
from shared.kafka import make_consumer, make_producer
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.timers import TimerScheduler
from tests.support.plumbing import TEST_TOPIC, plumbing, probe_timer_handler, registry_for


async def relay(lease_seconds: float) -> None:
    database = Database(os.environ["THREADLINE_DATABASE_URL"])
    producer = make_producer(os.environ["THREADLINE_KAFKA_BOOTSTRAP_SERVERS"], client_id="t-relay")
    await producer.start()
    try:
        await OutboxRelay(
            database, plumbing, producer, lease=timedelta(seconds=lease_seconds), poll_interval=0.2
        ).run()
    finally:
        await producer.stop()


async def consume(group: str, run_id: str, topic: str) -> None:
    bootstrap = os.environ["THREADLINE_KAFKA_BOOTSTRAP_SERVERS"]
    database = Database(os.environ["THREADLINE_DATABASE_URL"])
    producer = make_producer(bootstrap, client_id="t-dlq")
    consumer = make_consumer(bootstrap, group_id=group, client_id="t-consumer")
    await producer.start()
    await consumer.start()
    try:
        await ConsumerRunner(
            name=group,
            database=database,
            plumbing=plumbing,
            consumer=consumer,
            producer=producer,
            registry=registry_for(group, run_id),
            topics=[topic],
            max_attempts=2,
            backoff=0.05,
        ).run()
    finally:
        await consumer.stop()
        await producer.stop()


async def fire_timers(kind: str, run_id: str) -> None:
    database = Database(os.environ["THREADLINE_DATABASE_URL"])
    scheduler = TimerScheduler(
        database, plumbing, {kind: probe_timer_handler(run_id)}, poll_interval=0.1
    )
    await scheduler.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consume", "timers"])
    parser.add_argument("--kind", default="")
    parser.add_argument("--topic", default=TEST_TOPIC)
    parser.add_argument("--group", default="")
    parser.add_argument("--run-id", default="")
    parser.add_argument("--lease-seconds", type=float, default=2.0)
    args = parser.parse_args()
    configure_logging(f"test-{args.role}", "INFO", json=True)
    if args.role == "relay":
        asyncio.run(relay(args.lease_seconds))
    elif args.role == "timers":
        asyncio.run(fire_timers(args.kind, args.run_id))
    else:
        asyncio.run(consume(args.group, args.run_id, args.topic))


if __name__ == "__main__":
    main()
