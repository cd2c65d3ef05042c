"""The pipeline every capability stands on, measured on real PostgreSQL and Kafka processes:

- outbox relay throughput: events appended by many transactions, published and marked;
- consumer throughput: events applied exactly once (inbox row + effect in one transaction each);
- referral intake: POST /v1/referrals latency and throughput against the real service process;
- end to end: from the POST's 201 to the MASH inbox row written by the notifications consumer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from deploy.local.stack import Stack
from services.catalogue import MIGRATED
from shared import outbox
from shared.consumer import ConsumerRunner, HandlerRegistry
from shared.db import Database, service_metadata
from shared.events import Event
from shared.events.envelope import Envelope
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.migrations import upgrade
from shared.outbox import OutboxRelay
from shared.plumbing import attach_plumbing

BASE = int(os.environ.get("THREADLINE_BENCH_PORT_BASE", 24370))
BENCH_TOPIC = "threadline.bench.v1"  # no service reads it, so the bench load stays its own
metadata = service_metadata("bench")
plumbing = attach_plumbing(metadata)


class BenchTicked(Event, type="bench.ticked", topic=BENCH_TOPIC, key="stream", producer="bench"):
    """A benchmark event."""

    stream: str
    sequence: int


def _stack() -> Stack:
    # fsync stays on: measure as a real deployment runs.
    return Stack.isolated("bench", base_port=BASE, durable=True)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50) * 1000, 2),
        "p95": round(at(0.95) * 1000, 2),
        "p99": round(at(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }


def _referral(n: int) -> dict[str, Any]:
    """A small referral (one child, no family): this benchmark measures the pipeline, not the
    intake of realistic bodies, which bench/ingest.py does."""
    return {
        "referrer": {
            "organisation_name": "Oakfield Primary School",
            "name": "Bench DSL",
            "role": "Designated Safeguarding Lead",
            "email": "dsl@oakfield.example.org",
            "raised_via": "portal",
        },
        "children": [
            {"given_names": f"Child{n}", "family_name": "Bench", "estimated_age_years": 8}
        ],
        "concern": {
            "categories": ["neglect"],
            "what_happened": f"Benchmark concern {n}.",
            "immediate_risk": False,
        },
        "consent": {"parents": {"status": "agreed"}},
    }


async def _token(client: httpx.AsyncClient, identity_url: str) -> dict[str, str]:
    response = await client.post(
        f"{identity_url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("oakfield-primary", "dev-secret-oakfield-primary"),
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _create_bench_schema(url: str) -> None:
    database = Database(url, pool_size=1)
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS bench")
        await connection.run_sync(metadata.create_all)
    await database.dispose()


async def _relay_throughput(stack: Stack, events: int) -> dict[str, Any]:
    database = Database(stack.database_url, pool_size=4)
    now = datetime.now(UTC)
    append_started = time.perf_counter()
    per_transaction = 10
    for start in range(0, events, per_transaction):
        async with database.transaction() as session:
            for n in range(start, min(events, start + per_transaction)):
                await outbox.append(
                    session,
                    plumbing,
                    BenchTicked(stream=f"stream-{n % 64}", sequence=n),
                    service="bench",
                    now=now,
                )
    append_seconds = time.perf_counter() - append_started

    producer = make_producer(stack.kafka.bootstrap_servers, client_id="bench-relay")
    await producer.start()
    relay = OutboxRelay(database, plumbing, producer, batch_size=500, lease=timedelta(seconds=60))
    relay_started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    while True:
        async with database.transaction() as session:
            if await outbox.backlog(session, plumbing) == 0:
                break
        await asyncio.sleep(0.02)
    relay_seconds = time.perf_counter() - relay_started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await producer.stop()
    await database.dispose()
    return {
        "events": events,
        "events_per_transaction": per_transaction,
        "append_events_per_s": round(events / append_seconds, 1),
        "relay_events_per_s": round(events / relay_seconds, 1),
        "relay_seconds": round(relay_seconds, 3),
    }


async def _consumer_throughput(stack: Stack, events: int) -> dict[str, Any]:
    """Apply every bench event once through the real ConsumerRunner (inbox + effect per event)."""
    database = Database(stack.database_url, pool_size=4)
    registry = HandlerRegistry()
    applied_streams: set[str] = set()

    @registry.on(BenchTicked)
    async def remember(session: AsyncSession, event: BenchTicked, envelope: Envelope) -> None:
        applied_streams.add(event.stream)  # the inbox row is the effect under test

    consumer = make_consumer(
        stack.kafka.bootstrap_servers, group_id="bench-consumer", client_id="bench-consumer"
    )
    producer = make_producer(stack.kafka.bootstrap_servers, client_id="bench-dlq")
    await consumer.start()
    await producer.start()
    runner = ConsumerRunner(
        name="bench-consumer",
        database=database,
        plumbing=plumbing,
        consumer=consumer,
        producer=producer,
        registry=registry,
        topics=[BENCH_TOPIC],
    )
    started = time.perf_counter()
    task = asyncio.create_task(runner.run())
    # Polling the runner's own counters is the measurement; an Event would add a hook to it.
    while runner.applied + runner.duplicates < events and time.perf_counter() - started < 600:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.stop()
    await producer.stop()
    await database.dispose()
    return {
        "events": events,
        "applied": runner.applied,
        "duplicates": runner.duplicates,
        "consumer_events_per_s": round(runner.applied / seconds, 1),
        "seconds": round(seconds, 3),
    }


async def _intake_and_end_to_end(stack: Stack, requests: int, concurrency: int) -> dict[str, Any]:
    url = stack.url("referrals") + "/v1/referrals"
    database = Database(stack.database_url, pool_size=2)
    latencies: list[float] = []
    end_to_end: list[float] = []
    failures = 0

    async with httpx.AsyncClient(timeout=30) as client:
        client.headers.update(await _token(client, stack.url("identity")))
        # Warm-up: connections, caches, the consumer group's first join.
        for n in range(10):
            await client.post(url, json=_referral(-n))

        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(requests):
            queue.put_nowait(n)

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                n = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, json=_referral(n))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        intake_seconds = time.perf_counter() - started

        # Let the consumer drain the intake backlog, so end-to-end samples measure an idle
        # pipeline rather than a queue.
        expected = requests + 10
        drain_started = time.perf_counter()
        while time.perf_counter() - drain_started < 120:
            async with database.engine.connect() as connection:
                seen = await connection.scalar(
                    text(
                        "SELECT count(*) FROM notifications.inbox_items WHERE kind = 'new_referral'"
                    )
                )
            if (seen or 0) >= expected:
                break
            await asyncio.sleep(0.05)
        drain_seconds = time.perf_counter() - drain_started

        # End to end, one at a time so that each measurement is of an idle pipeline.
        probe_sql = text("SELECT 1 FROM notifications.inbox_items WHERE referral_id = :id")
        for n in range(min(100, requests)):
            response = await client.post(url, json=_referral(100000 + n))
            posted = time.perf_counter()
            referral_id = response.json()["id"]
            while True:
                async with database.engine.connect() as connection:
                    found = await connection.scalar(probe_sql, {"id": referral_id})
                if found:
                    end_to_end.append(time.perf_counter() - posted)
                    break
                if time.perf_counter() - posted > 30:
                    failures += 1
                    break
                await asyncio.sleep(0.002)

    async with database.engine.connect() as connection:
        inbox_total = await connection.scalar(
            select(func.count()).select_from(text("notifications.inbox_items"))
        )
    await database.dispose()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "failures": failures,
        "intake_requests_per_s": round(requests / intake_seconds, 1),
        "intake_latency_ms": _percentiles(latencies),
        "backlog_drain_seconds_after_intake": round(drain_seconds, 3),
        "end_to_end_samples": len(end_to_end),
        "end_to_end_ms": _percentiles(end_to_end),
        "inbox_items": inbox_total,
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    stack = _stack()
    stack.stop_services()
    stack.wipe()
    shutil.rmtree(stack.log_dir, ignore_errors=True)
    stack.start_infrastructure()
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers))
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers, [BENCH_TOPIC]))
        asyncio.run(_create_bench_schema(stack.database_url))
        events = 2000 if quick else 20000
        relay = asyncio.run(_relay_throughput(stack, events))
        consumer = asyncio.run(_consumer_throughput(stack, events))
        stack.start_services()
        intake = asyncio.run(_intake_and_end_to_end(stack, 200 if quick else 2000, concurrency=8))
    finally:
        stack.stop_services()
        stack.stop_infrastructure()
    return {
        "benchmark": "pipeline",
        "relay": relay,
        "consumer": consumer,
        "intake": intake,
        "table": {
            "outbox append (10 events/txn)": (relay["append_events_per_s"], "events/s"),
            "relay publish+mark": (relay["relay_events_per_s"], "events/s"),
            "consumer apply (inbox, 1 txn per fetched batch)": (
                consumer["consumer_events_per_s"],
                "events/s",
            ),
            "POST /v1/referrals throughput (8 clients)": (
                intake["intake_requests_per_s"],
                "req/s",
            ),
            "POST /v1/referrals p50": (intake["intake_latency_ms"]["p50"], "ms"),
            "POST /v1/referrals p99": (intake["intake_latency_ms"]["p99"], "ms"),
            "POST → MASH inbox p50": (intake["end_to_end_ms"]["p50"], "ms"),
            "POST → MASH inbox p95": (intake["end_to_end_ms"]["p95"], "ms"),
            "POST → MASH inbox max": (intake["end_to_end_ms"]["max"], "ms"),
            "failures": (intake["failures"], "count"),
        },
    }
