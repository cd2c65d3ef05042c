"""Notifications, measured on real processes (PostgreSQL with fsync on, Kafka, the identity,
consent, linking and notifications services) with a real webhook receiver:

1. **Sustained delivery rate.** Missed-deadline events go to Kafka; each makes two messages (to
   the MASH manager and to the referrer), each into the portal inbox and out by a signed webhook
   to the receiver, which verifies every one and applies each id once. ``messages_per_s`` is the
   messages delivered over the time from the first message to the last delivery.
2. **Operation Encompass, a simulated week.** Police domestic-abuse contacts with 1-3 children
   each, at the times of a simulated week (evenings and weekends heavier, some just before
   registration), go through linking, the consent service's decision point and the webhook
   receiver. Each notice's delivery is placed in the simulated week at the contact's simulated
   time plus the latency the pipeline really took; ``encompass_on_time_share`` is the share
   delivered before the next school day started (the deadline the service computed).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import text

from bench.ingest import CpuSampler
from deploy.local.demo import partnership_section
from deploy.local.stack import Stack
from services.catalogue import MIGRATED, load_events
from services.notifications.webhooks import VerifiedWebhook, WebhookVerifier, receiver_app
from services.referrals.contacts.events import DomesticAbuseIncidentRecorded, ReportedChildPresent
from services.referrals.events import ReferralFeedbackOverdue
from shared import context
from shared.calendar import LONDON
from shared.db import Database
from shared.events.envelope import envelope_for, to_kafka
from shared.events.registry import Event, spec_for
from shared.identifiers import nhs_check_digit, upn_check_letter
from shared.kafka import ensure_topics, make_producer
from shared.migrations import upgrade

BASE = int(os.environ.get("THREADLINE_BENCH_NOTIFICATIONS_PORT_BASE", 25150))
RECEIVER_PORT = BASE + 40
SECRET = "whsec_" + "YmVuY2gtbm90aWZpY2F0aW9ucy1zZWNyZXQtMDAwMQ=="  # 32 bytes, bench only
SERVICES = ("identity", "consent", "linking", "notifications")
# A simulated week: Monday 8 February 2027 to Sunday 14 February, the last week of the first
# half of the spring term (half-term follows: Friday's and the weekend's notices are due on
# Monday 22 February).
WEEK_START = datetime(2027, 2, 8, 0, 0, tzinfo=LONDON)


def _stack() -> Stack:
    return Stack.isolated("bench-notifications", base_port=BASE, durable=True)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50) * 1000, 1),
        "p95": round(at(0.95) * 1000, 1),
        "p99": round(at(0.99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
        "mean": round(statistics.fmean(ordered) * 1000, 1),
    }


def _routing(path: Path) -> Path:
    hook = f'url = "http://127.0.0.1:{RECEIVER_PORT}/"\nsecrets = ["{SECRET}"]'
    path.write_text(
        f"""
{partnership_section("Bench partnership")}

[[organisations]]
code = "MASH-DEMO"
name = "Demo MASH"
agency = "mash"
[[organisations.webhooks]]
id = "mash-system"
{hook}

[[organisations]]
code = "100001"
name = "Oakfield Primary School"
agency = "school"
[[organisations.webhooks]]
id = "oakfield-mis"
{hook}

[[organisations]]
code = "100002"
name = "Brookside Primary School"
agency = "school"
[[organisations.webhooks]]
id = "brookside-mis"
{hook}

[[organisations]]
code = "DEMO-LA-EDS"
name = "Education safeguarding team"
agency = "local_authority"
[[organisations.webhooks]]
id = "la-eds"
{hook}

[[organisations]]
code = "DEMO-PF"
name = "Demo Police Force"
agency = "police"
telephone = "101"
""",
        encoding="utf-8",
    )
    return path


class Receiver:
    """The agencies' systems: one real HTTP server verifying every webhook (Standard Webhooks)
    and applying each id once."""

    def __init__(self) -> None:
        self.verifier = WebhookVerifier([SECRET])
        self.applied: dict[str, float] = {}  # message id -> when it arrived (monotonic)
        self.duplicates = 0

    async def apply(self, webhook: VerifiedWebhook) -> None:
        message_id = webhook.payload["data"]["message_id"]
        if message_id in self.applied:
            self.duplicates += 1
        self.applied[message_id] = time.monotonic()

    async def serve(self, stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            receiver_app(self.verifier, self.apply),
            host="127.0.0.1",
            port=RECEIVER_PORT,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        await stop.wait()
        server.should_exit = True
        await task


async def _publish(bootstrap: str, events: Sequence[tuple[Event, datetime]]) -> float:
    """Publish the events (each with its event time) as their producing service's relay would:
    all sent, then every acknowledgement awaited; returns when the last was acknowledged."""
    producer = make_producer(bootstrap, client_id="bench-notifications")
    await producer.start()
    try:
        deliveries = []
        for event, moment in events:
            envelope = envelope_for(event, service="referrals", trace=context.current(), now=moment)
            record = to_kafka(envelope)
            deliveries.append(
                await producer.send(
                    str(spec_for(event).topic), record.value, key=record.key, headers=record.headers
                )
            )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    return time.monotonic()


async def _wait_for(database: Database, sql: str, wanted: int, within: float) -> int:
    deadline = time.monotonic() + within
    found = 0
    while time.monotonic() < deadline:
        async with database.engine.connect() as connection:
            found = int(await connection.scalar(text(sql)) or 0)
        if found >= wanted:
            return found
        await asyncio.sleep(0.2)
    return found


async def _throughput(
    stack: Stack, receiver: Receiver, events: int, *, cpu: bool = False
) -> dict[str, Any]:
    database = Database(stack.database_url, pool_size=2)
    sampler = CpuSampler(stack, extra={"bench: publisher + webhook receiver": os.getpid()})
    sampling = asyncio.create_task(sampler.run(1.0)) if cpu else None
    now = datetime.now(UTC)
    batch = [
        (
            ReferralFeedbackOverdue(
                referral_id=uuid.uuid4(),
                reference=f"TL-BENCH-{n:06d}",
                referrer_organisation_code="100001",
                raised_via="portal",
                due_at=now - timedelta(hours=1),
                detected_at=now,
            ),
            now,
        )
        for n in range(events)
    ]
    before = len(receiver.applied)
    started = time.monotonic()
    await _publish(stack.kafka.bootstrap_servers, batch)
    published = time.monotonic() - started
    wanted = 2 * events
    kinds = "kind IN ('deadline.missed', 'referral.overdue') AND reference LIKE 'TL-BENCH-%'"
    delivered = await _wait_for(
        database,
        f"SELECT count(*) FROM notifications.messages WHERE {kinds} AND status = 'delivered'",
        wanted,
        within=600,
    )
    where_cpu_goes: dict[str, Any] = {}
    if sampling is not None:
        sampler.sample()
        sampling.cancel()
        report = sampler.report()
        where_cpu_goes = {
            "window_s": report["window_s"],
            "machine_busy_cores": report["machine_busy_cores"],
            "cpu_ms_per_message": {
                name: round(1000 * group["cpu_seconds"] / max(1, wanted), 2)
                for name, group in report["groups"].items()
                if group["cpu_seconds"] > 0.05
            },
        }
    async with database.engine.connect() as connection:
        first, last, created = (
            await connection.execute(
                text(
                    "SELECT min(created_at), max(delivered_at), max(created_at) "
                    f"FROM notifications.messages WHERE {kinds}"
                )
            )
        ).one()
        latencies = [
            row[0]
            for row in await connection.execute(
                text(
                    "SELECT extract(epoch FROM delivered_at - created_at) "
                    f"FROM notifications.messages WHERE {kinds} AND delivered_at IS NOT NULL"
                )
            )
        ]
    await database.dispose()
    seconds = (last - first).total_seconds()
    return {
        "events": events,
        "messages": wanted,
        "delivered": delivered,
        "webhooks_applied": len(receiver.applied) - before,
        "webhook_duplicates_applied": receiver.duplicates,
        "publish_seconds": round(published, 2),
        "seconds_first_message_to_last_delivery": round(seconds, 2),
        "messages_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
        "consume_messages_per_s": round(wanted / (created - first).total_seconds(), 1),
        "created_to_delivered_ms": _percentiles([float(x) for x in latencies]),
        "where_cpu_goes": where_cpu_goes,
    }


def _child(rnd: random.Random) -> ReportedChildPresent:
    while True:
        stem = "9" + "".join(rnd.choice("0123456789") for _ in range(8))
        check = nhs_check_digit(stem)
        if check is not None:
            break
    body = "".join(rnd.choice("0123456789") for _ in range(12))
    school = rnd.choices(["100001", "100002", None], weights=[45, 45, 10])[0]
    return ReportedChildPresent(
        subject_id=uuid.uuid4(),
        given_names=rnd.choice(["Maya", "Leo", "Amara", "Tomasz", "Ellie", "Yusuf", "Ruby"]),
        family_name="".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(9)).title(),
        date_of_birth=date(2013 + rnd.randint(0, 8), rnd.randint(1, 12), rnd.randint(1, 28)),
        sex=rnd.choice(["female", "male"]),
        nhs_number=stem + str(check),
        upn=upn_check_letter(body) + body,
        school_urn=school,
        witnessed=rnd.random() < 0.7,
        injured=rnd.random() < 0.05,
    )


def simulated_times(incidents: int, rnd: random.Random) -> list[datetime]:
    """When the police record each incident in the week: most in the evening and at night,
    more at the weekend, and some in the hour before registration on school days."""
    hours = [
        (hour, weight)
        for hour, weight in enumerate(
            [6, 5, 4, 3, 2, 2, 2, 4, 6, 3, 3, 3, 3, 3, 3, 4, 5, 6, 8, 9, 10, 10, 9, 8]
        )
    ]
    times = []
    for _ in range(incidents):
        day = rnd.choices(range(7), weights=[1, 1, 1, 1, 1.3, 1.6, 1.5])[0]
        hour = rnd.choices([h for h, _ in hours], weights=[w for _, w in hours])[0]
        moment = WEEK_START + timedelta(days=day, hours=hour, minutes=rnd.randint(0, 59))
        times.append(moment.astimezone(UTC))
    return sorted(times)


async def _encompass_week(stack: Stack, receiver: Receiver, incidents: int) -> dict[str, Any]:
    rnd = random.Random(20270208)
    database = Database(stack.database_url, pool_size=2)
    events = []
    for moment in simulated_times(incidents, rnd):
        children = [_child(rnd) for _ in range(rnd.choices([1, 2, 3], weights=[55, 35, 10])[0])]
        events.append(
            (
                DomesticAbuseIncidentRecorded(
                    contact_id=uuid.uuid4(),
                    received_at=moment,
                    contributor_agency="police",
                    contributor_organisation_code="DEMO-PF",
                    occurred_at=moment - timedelta(minutes=rnd.randint(20, 180)),
                    incident_reference=f"BENCH/{uuid.uuid4().hex[:8]}",
                    risk_level=rnd.choice(["standard", "medium", "high"]),
                    force_code="30",
                    officer_name="PC Bench",
                    officer_collar_number="B1",
                    subjects=children,
                ),
                moment,
            )
        )
    notices = sum(len(event.subjects) for event, _ in events)
    # Published at a steady pace (a busy county's week, compressed): each contact's real
    # publish time is kept, so that its real latency can be placed in the simulated week.
    producer_pace = 0.02
    published: dict[str, float] = {}
    started = time.monotonic()
    for event, moment in events:
        published[str(event.contact_id)] = await _publish(
            stack.kafka.bootstrap_servers, [(event, moment)]
        )
        await asyncio.sleep(producer_pace)
    publish_seconds = time.monotonic() - started
    delivered = await _wait_for(
        database,
        "SELECT count(*) FROM notifications.messages WHERE kind = 'encompass.notice' "
        "AND reference LIKE 'BENCH/%' AND status IN ('delivered', 'refused', 'failed')",
        notices,
        within=900,
    )
    await asyncio.sleep(1.0)  # the receiver's record of the last webhooks
    async with database.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT m.id, m.contact_id, m.status, m.deliver_by, m.recipient_role, "
                    "m.delivered_at, m.created_at, a.received_at "
                    "FROM notifications.messages m "
                    "JOIN notifications.pending_alerts a ON a.contact_id = m.contact_id "
                    "AND m.dedupe_key = 'encompass:' || a.contact_id || ':' || a.subject_id "
                    "WHERE m.kind = 'encompass.notice' AND m.reference LIKE 'BENCH/%'"
                )
            )
        ).all()
        decisions = await connection.scalar(
            text(
                "SELECT count(*) FROM consent.ledger WHERE kind = 'disclosure.decided' "
                "AND purpose = 'operation_encompass'"
            )
        )
    await database.dispose()
    by_contact = {str(event.contact_id): moment for event, moment in events}
    on_time = 0
    latencies: list[float] = []
    margins: list[float] = []
    to_schools = 0
    for row in rows:
        arrived = receiver.applied.get(str(row.id))
        if row.status != "delivered" or arrived is None:
            continue
        latency = arrived - published[str(row.contact_id)]
        latencies.append(latency)
        simulated_delivery = by_contact[str(row.contact_id)] + timedelta(seconds=latency)
        margins.append((row.deliver_by - simulated_delivery).total_seconds() / 60)
        if simulated_delivery <= row.deliver_by:
            on_time += 1
        to_schools += row.recipient_role == "dsl"
    tightest = sorted(margins)[:5]
    return {
        "simulated_week": f"{WEEK_START.date()} to {(WEEK_START + timedelta(days=6)).date()}",
        "incidents": incidents,
        "notices": notices,
        "notices_settled": delivered,
        "delivered_by_webhook": len(latencies),
        "to_school_dsl": to_schools,
        "to_education_safeguarding_team": len(latencies) - to_schools,
        "disclosure_decisions_recorded": decisions,
        "publish_seconds": round(publish_seconds, 1),
        "contact_to_webhook_ms": _percentiles(latencies),
        "tightest_margins_minutes": [round(m, 1) for m in tightest],
        "on_time": on_time,
        "encompass_on_time_share": round(on_time / notices, 4) if notices else None,
    }


async def _measure(stack: Stack, quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    receiver = Receiver()
    stop = asyncio.Event()
    serving = asyncio.create_task(receiver.serve(stop))
    try:
        await asyncio.sleep(1.0)
        # Warm-up: the consumer group's first join, the connections.
        await _throughput(stack, receiver, 20)
        # 20,000 events make 40,000 messages: about a minute of delivery at the target rate,
        # so that the rate is a sustained one, not a burst's.
        events = int(os.environ.get("THREADLINE_BENCH_NOTIFICATIONS_EVENTS", 0)) or (
            1000 if quick else 20000
        )
        throughput = await _throughput(stack, receiver, events, cpu=True)
        week = await _encompass_week(stack, receiver, 150 if quick else 600)
    finally:
        stop.set()
        await serving
    return throughput, week


def run(*, quick: bool = False) -> dict[str, Any]:
    load_events()
    stack = _stack()
    stack.stop_services()
    stack.postgres.wipe()
    stack.kafka.wipe()
    shutil.rmtree(stack.log_dir, ignore_errors=True)
    stack.start_infrastructure()
    routing = _routing(stack.state_dir / "routing.toml")
    env = {
        # Two processes, each with its consumer (the group shares the topics' 3 partitions) and
        # its dispatcher (they share the work through SKIP LOCKED): both cores, as deployed.
        "THREADLINE_NOTIFICATIONS_WORKERS": os.environ.get(
            "THREADLINE_BENCH_NOTIFICATIONS_WORKERS", "2"
        ),
        "THREADLINE_NOTIFICATIONS_ROUTING_FILE": str(routing),
        "THREADLINE_NOTIFICATIONS_DELIVERY_POLL_SECONDS": "0.5",
        "THREADLINE_LOG_LEVEL": "WARNING",
    }
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers))
        for service in SERVICES:
            stack.start_service(service, env)
        for service in SERVICES:
            stack.wait_service_ready(service, timeout=120)
        throughput, week = asyncio.run(_measure(stack, quick))
    finally:
        stack.stop_services()
        stack.stop_infrastructure()
    return {
        "benchmark": "notifications",
        "messages_per_s": throughput["messages_per_s"],
        "encompass_on_time_share": week["encompass_on_time_share"],
        "throughput": throughput,
        "encompass_week": week,
        "targets": {"messages_per_s": 500, "encompass_on_time_share": 1.0},
        "table": {
            "messages delivered (inbox + signed webhook)": (throughput["messages_per_s"], "msg/s"),
            "created → delivered p50": (throughput["created_to_delivered_ms"]["p50"], "ms"),
            "created → delivered p99": (throughput["created_to_delivered_ms"]["p99"], "ms"),
            "webhooks applied twice": (throughput["webhook_duplicates_applied"], "count"),
            "Encompass notices in the simulated week": (week["notices"], "notices"),
            "Encompass contact → DSL webhook p50": (week["contact_to_webhook_ms"]["p50"], "ms"),
            "Encompass contact → DSL webhook p99": (week["contact_to_webhook_ms"]["p99"], "ms"),
            "Encompass notices before the next school day": (
                week["encompass_on_time_share"],
                "share",
            ),
        },
    }
