"""Faults under load: kill, stop and pause the parts of a running stack at random while a mixed
load runs, then check from the sources of truth that nothing was lost and nothing happened twice.

Injected, in a random order (``KINDS``): ``kill -9`` of a service's API process, of a
``<service>-work`` process (relay, consumers, timers), a worker armed with a named fault point
(``shared/faults.py``: killed between the database commit and the Kafka offset commit, after
publishing but before marking the outbox, or with a fired timer uncommitted), a stop and restart
of the Kafka broker, an immediate (crash) restart of PostgreSQL, and a worker paused with SIGSTOP
past its leases and then resumed while a second worker of the same service carries on.

After the load: every referral and contact that got a 201 is in the timeline exactly once; every
due deadline fired exactly once and no cancelled one fired; no notification was made twice and
no e-mail (real aiosmtpd server) or webhook (real HTTP receiver) arrived twice under different
ids; the consent ledger verifies. See docs/chaos.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import text

from deploy.local.demo import partnership_section
from deploy.local.stack import REPO_ROOT, Stack
from services.catalogue import MIGRATED
from services.notifications.webhooks import VerifiedWebhook, WebhookVerifier, receiver_app
from shared.db import Database
from shared.kafka import ensure_topics
from shared.migrations import upgrade

BASE = int(os.environ.get("THREADLINE_BENCH_CHAOS_PORT_BASE", 26500))
SECRET = "whsec_" + "Y2hhb3MtYmVuY2gtd2ViaG9vay1zZWNyZXQtMDAwMQ=="  # 32 bytes, chaos only
SERVICES = ("identity", "consent", "linking", "referrals", "timeline", "notifications")
WORKING = ("consent", "linking", "referrals", "timeline", "notifications")  # have -work
TWO_WORKERS = ("referrals", "notifications")  # a second worker takes over a paused one's leases
FAULT_POINTS = {
    "consumer.after_db_commit": ("linking", "timeline", "notifications", "consent"),
    "relay.after_publish": ("referrals", "linking", "consent"),
    "timers.before_commit": ("referrals",),
}
KINDS = (
    "kill_api",
    "kill_worker",
    "fault_point",
    "kafka_restart",
    "postgres_restart",
    "pause_worker",
)
LEASE_SECONDS = 5.0  # relay and delivery leases, short so a pause outlasts them
PAUSE_SECONDS = 14.0
RECOVERY_LIMIT = 180.0


def _stack(name: str, base: int) -> Stack:
    stack = Stack.isolated(name, base_port=base, durable=True)
    stack.extra_env.update(
        {f"THREADLINE_{name.upper()}_BACKGROUND": "separate" for name in WORKING}
        | {
            "THREADLINE_RELAY_LEASE_SECONDS": str(LEASE_SECONDS),
            "THREADLINE_NOTIFICATIONS_DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
            "THREADLINE_NOTIFICATIONS_SMTP_PORT": str(base + 40),
            "THREADLINE_NOTIFICATIONS_ROUTING_FILE": str(stack.state_dir / "routing.toml"),
            "THREADLINE_REFERRALS_POLICY_FILE": str(stack.state_dir / "policy.toml"),
            "THREADLINE_RATE_LIMIT_PER_SECOND": "1000000",
            "THREADLINE_RATE_LIMIT_BURST": "1000000",
        }
    )
    return stack


def _write_config(stack: Stack, base: int) -> None:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    # Acknowledgement and feedback are due at once (so deadlines fire during the run, racing the
    # MASH's actions); the decision clock runs an hour, so deciding always cancels it.
    (stack.state_dir / "policy.toml").write_text(
        "[deadlines.acknowledgement]\nhours = 0\n[deadlines.decision]\nhours = 1\n"
        "[deadlines.feedback]\nhours = 0\n"
    )
    hook = f'url = "http://127.0.0.1:{base + 41}/"\nsecrets = ["{SECRET}"]'
    (stack.state_dir / "routing.toml").write_text(
        f"""
{partnership_section("Chaos partnership")}

[[organisations]]
code = "MASH-DEMO"
name = "Demo MASH"
agency = "mash"
[[organisations.mailboxes]]
address = "mash-manager@mash.example.org"
roles = ["mash_manager"]
[[organisations.webhooks]]
id = "mash-system"
{hook}

[[organisations]]
code = "100001"
name = "Oakfield Primary School"
agency = "school"
[[organisations.mailboxes]]
address = "dsl@oakfield.example.org"
[[organisations.webhooks]]
id = "oakfield-mis"
{hook}

[[organisations]]
code = "DEMO-LA-EDS"
name = "Education safeguarding team"
agency = "local_authority"
[[organisations.mailboxes]]
address = "eds@la.example.org"

[[organisations]]
code = "DEMO-PF"
name = "Demo Police Force"
agency = "police"
telephone = "101"
""",
        encoding="utf-8",
    )


# -- the outside world: an SMTP server and a webhook receiver ----------------------------------


@dataclass
class Mailroom:
    """aiosmtpd's handler: every e-mail as it came, keyed by Message-ID and message id."""

    received: list[tuple[str, str, str]] = field(default_factory=list)  # (rcpt, msgid, message)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    (rcpt, str(message["Message-ID"]), str(message["X-Threadline-Message"]))
                )
        return "250 OK"


@dataclass
class Receiver:
    """The agencies' systems: verify each webhook, remember each arrival."""

    arrivals: list[tuple[str, str]] = field(default_factory=list)  # (webhook id, message id)

    async def apply(self, webhook: VerifiedWebhook) -> None:
        self.arrivals.append((webhook.webhook_id, str(webhook.payload["data"]["message_id"])))


def _serve_receiver(receiver: Receiver, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        receiver_app(WebhookVerifier([SECRET]), receiver.apply),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    return server


# -- the load -----------------------------------------------------------------------------------


def _letters(n: int) -> str:
    word = ""
    n += 26 * 26
    while n:
        n, digit = divmod(n, 26)
        word = "abcdefghijklmnopqrstuvwxyz"[digit] + word
    return word.capitalize()


def _referral(n: int) -> dict[str, Any]:
    return {
        "referrer": {
            "organisation_name": "Oakfield Primary School",
            "name": "Chaos DSL",
            "role": "Designated Safeguarding Lead",
            "email": "dsl@oakfield.example.org",
            "raised_via": "portal",
        },
        "children": [
            {"given_names": "Ava", "family_name": f"Chaos{_letters(n)}", "estimated_age_years": 8}
        ],
        "concern": {
            "categories": ["neglect"],
            "what_happened": f"Chaos concern {n}.",
            "immediate_risk": False,
        },
        "consent": {"parents": {"status": "agreed"}},
    }


def _contact(n: int) -> tuple[str, dict[str, Any]]:
    child = {
        "given_names": "Noah",
        "family_name": f"Contact{_letters(n)}",
        "date_of_birth": "2016-05-04",
        "school": {"urn": "100001", "name": "Oakfield Primary School"},
    }
    if n % 2:
        occurred = (datetime.now(UTC) - timedelta(hours=14)).replace(microsecond=0)
        return "police", {
            "type": "police_domestic_abuse_incident",
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
            "incident_reference": f"CHAOS/{n}",
            "risk_level": "medium",
            "officer": {"name": "PC Sam Officer", "collar_number": "ab1234"},
            "police_station": "Derby Central",
            "force_code": "30",
            "subjects": [{**child, "witnessed": True, "injured": False}],
            "adults": [],
            "narrative": f"Chaos incident {n}.",
        }
    today = date.today()
    return "school", {
        "type": "school_attendance_concern",
        "kind": "persistent_absence",
        "period_start": (today - timedelta(weeks=6)).isoformat(),
        "period_end": (today - timedelta(days=3)).isoformat(),
        "attendance_percentage": 81.5,
        "school_urn": "100001",
        "narrative": f"Chaos absence {n}.",
        "subjects": [child],
    }


CLIENTS = {
    "school": ("oakfield-primary", "dev-secret-oakfield-primary"),
    "police": ("demo-police", "dev-secret-demo-police"),
    "mash": ("demo-mash", "dev-secret-demo-mash"),
}


@dataclass
class Load:
    """A steady mixed load in its own thread: referrals, contacts and MASH actions."""

    stack: Stack
    rate: float  # requests started per second
    referrals: dict[str, float] = field(default_factory=dict)  # accepted id -> when
    contacts: dict[str, float] = field(default_factory=dict)
    police: set[str] = field(default_factory=set)  # the contacts that owe a school a notice
    attempts: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    sequence: int = 0
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    async def _token(self, client: httpx.AsyncClient, who: str) -> dict[str, str]:
        if who not in self.tokens:
            response = await client.post(
                f"{self.stack.url('identity')}/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=CLIENTS[who],
            )
            response.raise_for_status()
            self.tokens[who] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return self.tokens[who]

    async def post(
        self, client: httpx.AsyncClient, path: str, who: str, body: dict[str, Any], what: str
    ) -> str | None:
        """POST with one Idempotency-Key, retried on no answer or 5xx; the id on a 201/200."""
        key = str(uuid.uuid4())
        self.attempts[what] += 1
        for _ in range(4):
            try:
                headers = {**await self._token(client, who), "Idempotency-Key": key}
                response = await client.post(
                    f"{self.stack.url('referrals')}{path}", json=body, headers=headers
                )
            except httpx.HTTPError:
                self.answers[f"{what}:no answer"] += 1
                await asyncio.sleep(1.0)
                continue
            self.answers[f"{what}:{response.status_code}"] += 1
            if response.status_code in (200, 201):
                return str(response.json()["id"])
            if response.status_code < 500:
                return None
            await asyncio.sleep(1.0)
        return None

    async def new_referral(self, client: httpx.AsyncClient) -> str | None:
        self.sequence += 1
        referral_id = await self.post(
            client, "/v1/referrals", "school", _referral(self.sequence), "referral"
        )
        if referral_id is not None:
            self.referrals[referral_id] = time.monotonic()
        return referral_id

    async def new_contact(self, client: httpx.AsyncClient) -> None:
        self.sequence += 1
        who, body = _contact(self.sequence)
        contact_id = await self.post(client, "/v1/contacts", who, body, "contact")
        if contact_id is not None:
            self.contacts[contact_id] = time.monotonic()
            if who == "police":
                self.police.add(contact_id)

    async def mash_actions(self, client: httpx.AsyncClient, referral_id: str) -> None:
        """Acknowledge, decide and give feedback, each after a short wait (racing the clocks)."""
        steps = [
            ("acknowledge", {"acknowledged_by": "Chaos Worker"}),
            (
                "decision",
                {
                    "decision": "early_help",
                    "reason": "Chaos: an offer of early help.",
                    "decided_by": "Chaos Manager",
                },
            ),
            ("feedback", {"message": "Chaos feedback.", "given_by": "Chaos Worker"}),
        ]
        for action, body in steps[: random.choice((1, 2, 3, 3))]:
            await asyncio.sleep(random.uniform(0.0, 3.0))
            self.attempts[action] += 1
            key = str(uuid.uuid4())  # the same on every retry: feedback is then given once
            for _ in range(3):
                try:
                    response = await client.post(
                        f"{self.stack.url('referrals')}/v1/referrals/{referral_id}/{action}",
                        json=body,
                        headers={**await self._token(client, "mash"), "Idempotency-Key": key},
                    )
                except httpx.HTTPError:
                    self.answers[f"{action}:no answer"] += 1
                    await asyncio.sleep(1.0)
                    continue
                self.answers[f"{action}:{response.status_code}"] += 1
                if response.status_code < 500:
                    break
                await asyncio.sleep(1.0)

    async def one(self, client: httpx.AsyncClient) -> None:
        if random.random() < 0.3:
            await self.new_contact(client)
            return
        referral_id = await self.new_referral(client)
        if referral_id is not None and random.random() < 0.7:
            await self.mash_actions(client, referral_id)

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=20) as client:
            while not self.stop.is_set():
                if len(tasks) < 200:  # an outage must not pile up unbounded work
                    task = asyncio.create_task(self.one(client))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(1.0 / self.rate)
            await asyncio.gather(*tasks, return_exceptions=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)
        thread.start()
        return thread


# -- faults -------------------------------------------------------------------------------------


def _kill(pid: int | None, sig: signal.Signals = signal.SIGKILL) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _worker_names(service: str) -> list[str]:
    names = [f"{service}-work"]
    if service in TWO_WORKERS:
        names.append(f"{service}-work2")
    return names


def _start_worker(stack: Stack, name: str, extra: dict[str, str] | None = None) -> int:
    service = name.split("-")[0]
    env = {**os.environ, **stack.environment(), **(extra or {})}
    return stack._start_process(name, ["work", service], env)


def _wait_dead(stack: Stack, name: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if stack.service_pid(name) is None:
            return True
        time.sleep(0.2)
    return False


def inject(stack: Stack, kind: str, rng: random.Random) -> dict[str, Any]:
    """Inject one fault and put things back as an operator (or supervisor) would."""
    detail: dict[str, Any] = {"kind": kind}
    if kind == "kill_api":
        service = rng.choice(SERVICES)
        detail["target"] = service
        _kill(stack.service_pid(service))
        _wait_dead(stack, service, 10)
        stack.start_service(service)
        stack.wait_service_ready(service, timeout=120)
    elif kind == "kill_worker":
        name = rng.choice([n for s in WORKING for n in _worker_names(s)])
        detail["target"] = name
        _kill(stack.service_pid(name))
        _wait_dead(stack, name, 10)
        _start_worker(stack, name)
    elif kind == "fault_point":
        point = rng.choice(sorted(FAULT_POINTS))
        service = rng.choice(FAULT_POINTS[point])
        name = f"{service}-work"
        detail.update(target=name, fault_point=point)
        _kill(stack.service_pid(name))
        _wait_dead(stack, name, 10)
        _start_worker(stack, name, {"THREADLINE_FAULTS": point})
        detail["reached"] = _wait_dead(stack, name, 60)  # it kills itself at the point
        _kill(stack.service_pid(name))
        _wait_dead(stack, name, 10)
        _start_worker(stack, name)
    elif kind == "kafka_restart":
        detail["down_s"] = down = round(rng.uniform(3, 10), 1)
        detail["mode"] = mode = rng.choice(("stop", "kill -9"))
        if mode == "stop":
            stack.kafka.stop()
        else:
            stack.kafka.kill()
        time.sleep(down)
        stack.kafka.start()
        stack.kafka.wait_ready()
    elif kind == "postgres_restart":
        detail["mode"] = "immediate"  # a crash: recovery replays the WAL
        stack.postgres.stop(mode="immediate")
        time.sleep(rng.uniform(1, 4))
        stack.postgres.start()
        stack.postgres.wait_ready()
    elif kind == "pause_worker":
        service = rng.choice(TWO_WORKERS)
        name = rng.choice(_worker_names(service))
        detail.update(target=name, paused_s=PAUSE_SECONDS)
        pid = stack.service_pid(name)
        _kill(pid, signal.SIGSTOP)
        time.sleep(PAUSE_SECONDS)
        _kill(pid, signal.SIGCONT)
    else:
        raise ValueError(kind)
    return detail


async def _probe(stack: Stack, load: Load, started: float) -> float | None:
    """Seconds from ``started`` until a new referral is accepted and in the timeline."""
    database = Database(stack.database_url, pool_size=1)
    try:
        return await _probe_with(stack, load, database, started)
    finally:
        await database.dispose()


async def _probe_with(stack: Stack, load: Load, database: Database, started: float) -> float | None:
    async with httpx.AsyncClient(timeout=10) as client:
        referral_id = None
        while referral_id is None and time.monotonic() - started < RECOVERY_LIMIT:
            referral_id = await load.new_referral(client)
        while referral_id is not None and time.monotonic() - started < RECOVERY_LIMIT:
            try:
                async with database.engine.connect() as connection:
                    found = await connection.scalar(
                        text("SELECT count(*) FROM timeline.entries WHERE source_id = :id"),
                        {"id": referral_id},
                    )
                if found:
                    return time.monotonic() - started
            except Exception:  # PostgreSQL may still be recovering
                pass
            await asyncio.sleep(0.2)
    return None


# -- the check ----------------------------------------------------------------------------------

CHECKS = {
    # (name, kind: lost | duplicated, SQL returning the offending rows' count)
    "referral_not_in_timeline": (
        "lost",
        "SELECT count(*) FROM unnest(CAST(:referrals AS uuid[])) AS r(id) "
        "WHERE NOT EXISTS (SELECT 1 FROM timeline.entries e WHERE e.source_id = r.id)",
    ),
    "contact_not_in_timeline": (
        "lost",
        "SELECT count(*) FROM unnest(CAST(:contacts AS uuid[])) AS c(id) "
        "WHERE NOT EXISTS (SELECT 1 FROM timeline.entries e WHERE e.source_id = c.id)",
    ),
    "referral_not_in_mash_inbox": (
        "lost",
        "SELECT count(*) FROM unnest(CAST(:referrals AS uuid[])) AS r(id) "
        "WHERE NOT EXISTS (SELECT 1 FROM notifications.inbox_items i WHERE i.referral_id = r.id)",
    ),
    "encompass_notice_missing": (
        "lost",
        "SELECT count(*) FROM unnest(CAST(:police AS uuid[])) AS c(id) WHERE NOT EXISTS "
        "(SELECT 1 FROM notifications.messages m WHERE m.contact_id = c.id"
        " AND m.kind = 'encompass.notice')",
    ),
    "message_not_delivered": (
        "lost",
        "SELECT count(*) FROM notifications.messages WHERE status NOT IN ('delivered', 'refused')",
    ),
    "due_timer_not_fired": (
        "lost",
        "SELECT "
        + " + ".join(
            f"(SELECT count(*) FROM {schema}.timers WHERE due_at < now() - interval '5 seconds'"
            " AND fired_at IS NULL AND cancelled_at IS NULL)"
            for schema in MIGRATED
        ),
    ),
    "outbox_not_published": (
        "lost",
        "SELECT "
        + " + ".join(
            f"(SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL)"
            for schema in MIGRATED
        ),
    ),
    "timeline_entry_twice": (
        "duplicated",
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM timeline.entries "
        "GROUP BY source_id, subject_id, kind, title HAVING count(*) > 1) AS twice",
    ),
    "deadline_fired_twice": (
        "duplicated",
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM referrals.outbox "
        "WHERE event_type LIKE 'referral.%overdue' "
        "GROUP BY event_type, data->>'referral_id' HAVING count(*) > 1) AS twice",
    ),
    "cancelled_timer_fired": (
        "duplicated",
        "SELECT "
        + " + ".join(
            f"(SELECT count(*) FROM {schema}.timers WHERE cancelled_at IS NOT NULL"
            " AND fired_at IS NOT NULL AND fired_at > cancelled_at)"
            for schema in MIGRATED
        ),
    ),
    "notification_made_twice": (
        "duplicated",
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM notifications.messages "
        "GROUP BY kind, recipient_organisation, recipient_role, coalesce(referral_id, contact_id),"
        " subject_ids, details->>'deadline' HAVING count(*) > 1) AS twice",
    ),
    "inbox_item_twice": (
        "duplicated",
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM notifications.inbox_items"
        " GROUP BY kind, referral_id, audience, title HAVING count(*) > 1) AS twice",
    ),
}


async def _check(
    stack: Stack, load: Load, mailroom: Mailroom, receiver: Receiver
) -> dict[str, Any]:
    database = Database(stack.database_url, pool_size=1)
    found: dict[str, int] = {}
    params = {
        "referrals": list(load.referrals),
        "contacts": list(load.contacts),
        "police": list(load.police),
    }
    async with database.engine.connect() as connection:
        for name, (_, sql) in CHECKS.items():
            bound = {k: v for k, v in params.items() if f":{k}" in sql}
            found[name] = int(await connection.scalar(text(sql), bound) or 0)
        totals = {
            "timeline_entries": await connection.scalar(
                text("SELECT count(*) FROM timeline.entries")
            ),
            "timers": await connection.scalar(text("SELECT count(*) FROM referrals.timers")),
            "timers_fired": await connection.scalar(
                text("SELECT count(*) FROM referrals.timers WHERE fired_at IS NOT NULL")
            ),
            "timers_cancelled": await connection.scalar(
                text("SELECT count(*) FROM referrals.timers WHERE cancelled_at IS NOT NULL")
            ),
            "overdue_events": await connection.scalar(
                text(
                    "SELECT count(*) FROM referrals.outbox"
                    " WHERE event_type LIKE 'referral.%overdue'"
                )
            ),
            # An action that started before its deadline fired and committed after it: the
            # deadline shows met (at the request's time) and missed (at the firing's).
            "deadlines_met_while_firing": await connection.scalar(
                text(
                    "SELECT count(*) FROM referrals.referral_deadlines"
                    " WHERE missed_at IS NOT NULL AND met_at IS NOT NULL AND missed_at > met_at"
                )
            ),
            "notification_messages": await connection.scalar(
                text("SELECT count(*) FROM notifications.messages")
            ),
            "messages_by_status": dict(
                (
                    await connection.execute(
                        text("SELECT status, count(*) FROM notifications.messages GROUP BY 1")
                    )
                ).all()
            ),
        }
    await database.dispose()
    # Outside Threadline: an e-mail or webhook arriving again with the same id is the
    # at-least-once redelivery its id exists for; the same message under two ids is a duplicate.
    with mailroom.lock:
        mails = list(mailroom.received)
    by_mail_id = Counter((rcpt, mid) for rcpt, mid, _ in mails)
    mail_ids_per_message = {
        key: {mid for rcpt, mid, msg in mails if (rcpt, msg) == key}
        for key in {(rcpt, msg) for rcpt, _, msg in mails}
    }
    hooks = list(receiver.arrivals)
    by_hook_id = Counter(hook_id for hook_id, _ in hooks)
    hook_ids_per_message: dict[str, set[str]] = {}
    for hook_id, message_id in hooks:
        hook_ids_per_message.setdefault(message_id, set()).add(hook_id)
    found["email_twice_under_new_id"] = sum(len(v) - 1 for v in mail_ids_per_message.values())
    found["webhook_twice_under_new_id"] = sum(len(v) - 1 for v in hook_ids_per_message.values())
    totals.update(
        emails_received=len(mails),
        emails_redelivered_same_id=sum(n - 1 for n in by_mail_id.values()),
        webhooks_received=len(hooks),
        webhooks_redelivered_same_id=sum(n - 1 for n in by_hook_id.values()),
    )
    kinds = {name: kind for name, (kind, _) in CHECKS.items()}
    kinds.update(email_twice_under_new_id="duplicated", webhook_twice_under_new_id="duplicated")
    return {"found": found, "kinds": kinds, "totals": totals}


def _ledger_verify(stack: Stack) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local.cli", "ledger", "verify"],
        env={**os.environ, **stack.environment()},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()[-400:]


async def _drain(stack: Stack, load: Load, within: float) -> float:
    """Seconds until every accepted referral and contact is in the timeline and the outboxes,
    consumers and clocks are idle (or ``within`` passed)."""
    database = Database(stack.database_url, pool_size=1)
    started = time.monotonic()
    ids = list(load.referrals) + list(load.contacts)
    sql = text(
        "SELECT (SELECT count(*) FROM unnest(CAST(:ids AS uuid[])) AS s(id) WHERE NOT EXISTS "
        "(SELECT 1 FROM timeline.entries e WHERE e.source_id = s.id))"
        " + (SELECT count(*) FROM referrals.outbox WHERE published_at IS NULL)"
        " + (SELECT count(*) FROM notifications.outbox WHERE published_at IS NULL)"
        " + (SELECT count(*) FROM referrals.timers WHERE due_at < now() AND fired_at IS NULL"
        "    AND cancelled_at IS NULL)"
        " + (SELECT count(*) FROM notifications.messages"
        "    WHERE status NOT IN ('delivered', 'refused'))"
    )
    # Also every lost-check at 0: consumers still behind on Kafka have made no row yet to wait
    # for. A check still above 0 when nothing has moved for a minute is a loss, not a backlog.
    params = {
        "referrals": list(load.referrals),
        "contacts": list(load.contacts),
        "police": list(load.police),
    }
    lost_checks = [
        (text(check), {k: v for k, v in params.items() if f":{k}" in check})
        for name, (kind, check) in CHECKS.items()
        if kind == "lost"
    ]
    progress = text(
        "SELECT (SELECT count(*) FROM notifications.messages WHERE status = 'delivered')"
        " + (SELECT count(*) FROM notifications.inbox_items)"
        " + (SELECT count(*) FROM timeline.entries)"
    )
    last, moved = -1, time.monotonic()
    try:
        while time.monotonic() - started < within:
            async with database.engine.connect() as connection:
                pending = await connection.scalar(sql, {"ids": ids})
                for check, bound in lost_checks:
                    pending += await connection.scalar(check, bound)
                done = await connection.scalar(progress)
            if not pending:
                break
            if done != last:
                last, moved = done, time.monotonic()
            elif time.monotonic() - moved > 60:
                break  # stuck: the check will say what is missing
            await asyncio.sleep(1.0)
        await asyncio.sleep(3)  # deliveries in flight land
    finally:
        await database.dispose()
    return time.monotonic() - started


def run(
    *, quick: bool = False, seed: int | None = None, name: str = "chaos", base: int = BASE
) -> dict[str, Any]:
    """Run the load with faults on a stack under ``var/<name>`` (ports from ``base``)."""
    seconds = float(os.environ.get("THREADLINE_BENCH_CHAOS_SECONDS", 150 if quick else 600))
    rate = float(os.environ.get("THREADLINE_BENCH_CHAOS_RATE", 10))
    seed = seed if seed is not None else int(time.time())
    rng = random.Random(seed)
    stack = _stack(name, base)
    for name in [*SERVICES, *(f"{s}-work2" for s in TWO_WORKERS)]:
        stack.stop_service(name)
    stack.wipe()
    shutil.rmtree(stack.log_dir, ignore_errors=True)
    _write_config(stack, base)
    mailroom, receiver = Mailroom(), Receiver()
    smtp = Controller(mailroom, hostname="127.0.0.1", port=base + 40)
    smtp.start()
    webhook_server = _serve_receiver(receiver, base + 41)
    stack.start_infrastructure()
    load = Load(stack, rate=rate)
    faults: list[dict[str, Any]] = []
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(ensure_topics(stack.kafka.bootstrap_servers))
        stack.start_services(SERVICES)
        for service in TWO_WORKERS:
            _start_worker(stack, f"{service}-work2")
        warm = asyncio.run(_probe(stack, load, time.monotonic()))
        if warm is None:
            raise RuntimeError("the stack does not carry a referral to the timeline")
        thread = load.start()
        began = time.monotonic()
        # Every kind at least once (in a random order), then at random.
        order = rng.sample(KINDS, len(KINDS))
        while time.monotonic() - began < seconds or len(faults) < len(KINDS):
            time.sleep(rng.uniform(2, 8))
            kind = order[len(faults)] if len(faults) < len(order) else rng.choice(KINDS)
            injected = time.monotonic()
            detail = inject(stack, kind, rng)
            detail["restored_s"] = round(time.monotonic() - injected, 2)
            recovered = asyncio.run(_probe(stack, load, injected))
            detail["recovery_s"] = None if recovered is None else round(recovered, 2)
            detail["at_s"] = round(injected - began, 1)
            faults.append(detail)
            print(f"chaos: {detail}", flush=True)
        load.stop.set()
        thread.join(timeout=120)
        load_seconds = time.monotonic() - began
        drain_s = asyncio.run(_drain(stack, load, within=900))
        check = asyncio.run(_check(stack, load, mailroom, receiver))
        ledger_ok, ledger_output = _ledger_verify(stack)
    finally:
        stack.stop_services()
        for service in TWO_WORKERS:
            stack.stop_service(f"{service}-work2")
        stack.stop_infrastructure()
        smtp.stop()
        webhook_server.should_exit = True
    lost = sum(n for name, n in check["found"].items() if check["kinds"][name] == "lost")
    duplicated = sum(
        n for name, n in check["found"].items() if check["kinds"][name] == "duplicated"
    )
    recoveries = [f["recovery_s"] for f in faults if f["recovery_s"] is not None]
    unrecovered = sum(1 for f in faults if f["recovery_s"] is None)
    by_kind = Counter(f["kind"] for f in faults)
    per_kind = {
        kind: {
            "count": by_kind[kind],
            "max_recovery_s": max(
                (f["recovery_s"] or RECOVERY_LIMIT for f in faults if f["kind"] == kind),
                default=None,
            ),
        }
        for kind in KINDS
    }
    max_recovery = max(recoveries, default=0.0) if not unrecovered else RECOVERY_LIMIT
    table: dict[str, tuple[Any, str]] = {
        "faults injected": (len(faults), "count"),
        **{f"  {kind}": (per_kind[kind]["count"], "count") for kind in KINDS},
        "referrals accepted (201)": (len(load.referrals), "count"),
        "contacts accepted (201)": (len(load.contacts), "count"),
        "lost (target 0)": (lost, "count"),
        "duplicated effects (target 0)": (duplicated, "count"),
        "ledger verifies": ("yes" if ledger_ok else "NO", ""),
        "max recovery after a fault": (round(max_recovery, 1), "s"),
        "backlog drained after the load": (round(drain_s, 1), "s"),
        "e-mails / webhooks received": (
            f"{check['totals']['emails_received']}/{check['totals']['webhooks_received']}",
            "count",
        ),
    }
    return {
        "benchmark": "chaos",
        "quick": quick,
        "seed": seed,
        "load_seconds": round(load_seconds, 1),
        "rate_per_s": rate,
        "faults_injected": len(faults),
        "faults_by_kind": dict(by_kind),
        "lost": lost,
        "duplicated_effects": duplicated,
        "max_recovery_s": round(max_recovery, 2),
        "unrecovered_faults": unrecovered,
        "drain_s": round(drain_s, 2),
        "ledger_verified": ledger_ok,
        "ledger_output": ledger_output,
        "accepted": {"referrals": len(load.referrals), "contacts": len(load.contacts)},
        "requests": {"attempts": dict(load.attempts), "answers": dict(load.answers)},
        "checks": check["found"],
        "totals": check["totals"],
        "per_kind": per_kind,
        "faults": faults,
        "table": table,
    }


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--quick", action="store_true", help="a few faults, ~3-5 minutes")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    result = run(quick=args.quick, seed=args.seed)
    result["finished_at"] = datetime.now(UTC).isoformat()
    path = Path(__file__).parent / "results" / "chaos.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nchaos  →  {path.relative_to(REPO_ROOT)}")
    for metric, (value, unit) in result["table"].items():
        print(f"{metric:<44} {value!s:>12}  {unit}")
    ok = result["lost"] == 0 and result["duplicated_effects"] == 0 and result["ledger_verified"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
