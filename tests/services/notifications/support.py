"""The notifications tests' world: a real SMTP server (aiosmtpd), a real HTTP webhook receiver
built on the shipped verifier, a routing file pointing at both, and the services in-process on
the session's PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.types import Receive, Scope, Send

from deploy.local.demo import partnership_section
from services.notifications.webhooks import (
    VerifiedWebhook,
    WebhookVerifier,
    receiver_app,
)
from shared.clock import Clock
from shared.disclosures import DisclosureClient
from tests.support.kafka import eventually

# Each endpoint's signing secret, and the one it is rotating to.
OLD_SECRET = "whsec_" + base64.b64encode(b"threadline-test-secret-old-0001").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"threadline-test-secret-new-0002").decode()
DSL_MAILBOX = "dsl@oakfield.example.org"
MASH_MAILBOX = "managers@mash.example.org"
EDS_MAILBOX = "eds@demo-la.example.org"
SOCIAL_CARE_MAILBOX = "duty@demo-la.example.org"
HEALTH_MAILBOX = "safeguarding@rdemo.example.org"
POLICE_MAILBOX = "encompass@police.example.org"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the SMTP server --------------------------------------------------------------------------


@dataclass
class Mail:
    to: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"]).strip()

    @property
    def text(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()


@dataclass
class SmtpServer:
    """aiosmtpd in its own thread. ``refuse_first``: answer the first that many attempts of
    each message (by Message-ID) 451, try later; ``refuse_always``: 451 to every one."""

    port: int
    received: list[Mail] = field(default_factory=list)
    refused: int = 0
    refuse_first: int = 0
    refuse_always: bool = False
    _tries: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        with self._lock:
            key = str(message["Message-ID"])
            self._tries[key] = self._tries.get(key, 0) + 1
            if self.refuse_always or self._tries[key] <= self.refuse_first:
                self.refused += 1
                return "451 4.3.0 Mailbox busy, try again later"
            self.received.append(Mail(list(envelope.rcpt_tos), message))
        return "250 OK"

    def to(self, address: str) -> list[Mail]:
        with self._lock:
            return [mail for mail in self.received if address in mail.to]


@contextlib.contextmanager
def smtp_server() -> Any:
    server = SmtpServer(port=free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


# -- the webhook receiver -----------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """An agency's system: a real HTTP server that verifies each webhook with the shipped
    verifier and applies each id once. ``fail_first``: answer the first that many attempts of
    each webhook id 503; ``fail_always``: 503 to everything."""

    url: str
    verifier: WebhookVerifier
    applied: list[VerifiedWebhook] = field(default_factory=list)
    attempts: int = 0
    fail_first: int = 0
    fail_always: bool = False
    tries: dict[str, int] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    # Every request as it came: (body, headers), so a test can replay one.
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [webhook.payload["data"]["kind"] for webhook in self.applied]

    def for_message(self, message_id: str) -> list[VerifiedWebhook]:
        return [w for w in self.applied if w.payload["data"]["message_id"] == message_id]


@contextlib.asynccontextmanager
async def webhook_receiver(
    secrets: list[str], clock: Clock | None = None
) -> AsyncIterator[WebhookReceiver]:
    verifier = WebhookVerifier(secrets, clock=clock)
    holder: dict[str, WebhookReceiver] = {}

    async def apply(webhook: VerifiedWebhook) -> None:
        holder["receiver"].applied.append(webhook)

    inner = receiver_app(verifier, apply)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        receiver = holder["receiver"]
        if scope["type"] == "http":
            receiver.attempts += 1
            chunks = []
            while True:
                event = await receive()
                chunks.append(event.get("body", b""))
                if not event.get("more_body"):
                    break
            body = b"".join(chunks)
            receiver.requests.append((body, {k.decode(): v.decode() for k, v in scope["headers"]}))
            replayed = False

            async def replay() -> Any:  # the body again, for the verifier
                nonlocal replayed
                if replayed:
                    return {"type": "http.disconnect"}
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            webhook_id = dict(receiver.requests[-1][1]).get("webhook-id", "")
            receiver.tries[webhook_id] = receiver.tries.get(webhook_id, 0) + 1
            if receiver.fail_always or receiver.tries[webhook_id] <= receiver.fail_first:
                receiver.answers.append(503)
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"busy"})
                return

            async def recording(message: Any) -> None:
                if message["type"] == "http.response.start":
                    receiver.answers.append(int(message["status"]))
                await send(message)

            await inner(scope, replay, recording)
            return
        await inner(scope, receive, send)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, timeout=10, every=0.05)
    holder["receiver"] = WebhookReceiver(f"http://127.0.0.1:{config.port}/", verifier)
    try:
        yield holder["receiver"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


# -- configuration ---------------------------------------------------------------------------------


def routing_file(tmp: Path, receiver: WebhookReceiver, *, extra: str = "") -> Path:
    """The demo partnership's organisations with mailboxes on the test SMTP server and the
    schools' and the LA's systems on the test webhook receiver (signing with the old and the new
    secret: a rotation under way)."""
    path = tmp / f"routing-{uuid.uuid4().hex[:8]}.toml"
    secrets = f'["{NEW_SECRET}", "{OLD_SECRET}"]'
    path.write_text(
        f"""
{partnership_section("Test partnership")}

[[organisations]]
code = "MASH-DEMO"
name = "Demo Multi-Agency Safeguarding Hub"
agency = "mash"
telephone = "01632 960 001"
[[organisations.mailboxes]]
address = "{MASH_MAILBOX}"
roles = ["mash_manager"]

[[organisations]]
code = "100001"
name = "Oakfield Primary School"
agency = "school"
telephone = "01632 960 101"
[[organisations.mailboxes]]
address = "{DSL_MAILBOX}"
roles = ["dsl", "referrer"]
[[organisations.webhooks]]
id = "oakfield-mis"
url = "{receiver.url}"
secrets = {secrets}
roles = ["dsl", "referrer"]

[[organisations]]
code = "100002"
name = "Brookside Primary School"
agency = "school"

[[organisations]]
code = "DEMO-PF"
name = "Demo Police Force"
agency = "police"
telephone = "101"
[[organisations.mailboxes]]
address = "{POLICE_MAILBOX}"

[[organisations]]
code = "RDEMO"
name = "Demo NHS Foundation Trust"
agency = "health"
telephone = "01632 960 300"
[[organisations.mailboxes]]
address = "{HEALTH_MAILBOX}"
roles = ["clinician"]

[[organisations]]
code = "DEMO-LA"
name = "Demo County Council children's social care"
agency = "local_authority"
telephone = "01632 960 200"
[[organisations.mailboxes]]
address = "{SOCIAL_CARE_MAILBOX}"
roles = ["social_worker"]

[[organisations]]
code = "DEMO-LA-EDS"
name = "Demo County Council education safeguarding team"
agency = "local_authority"
telephone = "01632 960 210"
[[organisations.mailboxes]]
address = "{EDS_MAILBOX}"
[[organisations.webhooks]]
id = "la-eds"
url = "{receiver.url}"
secrets = {secrets}
{extra}
""",
        encoding="utf-8",
    )
    return path


async def _no_token() -> str:
    return "unused: nothing listens on the discard port"


# -- the services ----------------------------------------------------------------------


@dataclass
class World:
    referrals: httpx.AsyncClient
    notifications: httpx.AsyncClient
    consent: httpx.AsyncClient
    smtp: SmtpServer
    receiver: WebhookReceiver
    database_url: str

    async def message(self, headers: dict[str, str], **filters: Any) -> list[dict[str, Any]]:
        response = await self.notifications.get("/v1/messages", params=filters, headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@contextlib.asynccontextmanager
async def world(
    database_url: str,
    bootstrap: str,
    tmp: Path,
    *,
    clock: Clock | None = None,
    linking: bool = True,
    routing_extra: str = "",
    decision_point_up: Callable[[], bool] | None = None,
    **notification_overrides: Any,
) -> AsyncIterator[World]:
    """Referrals, consent, linking and notifications in-process on the session's PostgreSQL and
    Kafka, with the SMTP server and the webhook receiver they deliver to."""
    from services.linking.app import create_app as create_linking
    from services.notifications.app import create_app as create_notifications
    from services.referrals.app import create_app as create_referrals
    from tests.services.consent_support import consent_app, decision_point
    from tests.support.apps import (
        linking_settings,
        notifications_settings,
        referrals_settings,
        serving,
    )

    with smtp_server() as smtp:
        async with (
            webhook_receiver([NEW_SECRET]) as receiver,
            serving(consent_app(database_url, bootstrap, tmp)) as consent_api,
        ):
            settings = notifications_settings(
                database_url,
                bootstrap,
                routing_file=str(routing_file(tmp, receiver, extra=routing_extra)),
                smtp_port=smtp.port,
                delivery_backoff_base_seconds=0.05,
                delivery_backoff_max_seconds=0.4,
                delivery_max_attempts=4,
                link_wait_seconds=60,
                **notification_overrides,
            )
            decide = decision_point(consent_api)
            if decision_point_up is not None:
                down = DisclosureClient("http://127.0.0.1:9", _no_token).decide
                real = decide

                async def decide(request: Any) -> Any:  # the consent service, when it is up
                    return await (real if decision_point_up() else down)(request)

            notifications = create_notifications(
                settings, clock=clock, configure_logs=False, decide=decide
            )
            referrals = create_referrals(
                referrals_settings(database_url, bootstrap),
                clock=clock,
                configure_logs=False,
                decide=decision_point(consent_api),  # feedback is decided, whatever the toggle
            )
            async with contextlib.AsyncExitStack() as stack:
                if linking:
                    await stack.enter_async_context(
                        serving(
                            create_linking(
                                linking_settings(database_url, bootstrap), configure_logs=False
                            )
                        )
                    )
                referrals_api = await stack.enter_async_context(serving(referrals))
                notifications_api = await stack.enter_async_context(serving(notifications))
                yield World(
                    referrals_api, notifications_api, consent_api, smtp, receiver, database_url
                )


# -- children of their own, so that no other test's records link to them --------------------


def unique_child(*, school_urn: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A child no other test has mentioned: a fresh valid NHS number and UPN, and a family name
    of random letters (so the probabilistic model cannot match them to anyone else either)."""
    import random
    import string

    from shared.identifiers import nhs_check_digit, upn_check_letter

    rnd = random.Random()
    while True:
        stem = "9" + "".join(rnd.choice(string.digits) for _ in range(8))
        check = nhs_check_digit(stem)
        if check is not None:
            break
    body = "".join(rnd.choice(string.digits) for _ in range(12))
    upn = upn_check_letter(body) + body
    family = "".join(rnd.choice(string.ascii_lowercase) for _ in range(9)).capitalize()
    child: dict[str, Any] = {
        "given_names": rnd.choice(["Maya", "Amara", "Tomasz", "Ellie", "Yusuf", "Ruby"]),
        "family_name": family,
        "date_of_birth": f"2016-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}",
        "sex": "female",
        "nhs_number": stem + str(check),
        "upn": upn,
    }
    if school_urn is not None:
        child["school"] = {"urn": school_urn, "name": "Oakfield Primary School"}
    child.update(overrides)
    return child


def police_incident(
    children: list[dict[str, Any]], occurred_at: str, *, witnessed: bool = True
) -> dict[str, Any]:
    return {
        "type": "police_domestic_abuse_incident",
        "occurred_at": occurred_at,
        "incident_reference": f"DEMO/2026/{uuid.uuid4().hex[:6]}",
        "risk_level": "high",
        "officer": {"name": "PC Sam Officer", "collar_number": "ab1234"},
        "police_station": "Derby Central",
        "force_code": "30",
        "subjects": [{**child, "witnessed": witnessed, "injured": False} for child in children],
        "adults": [
            {"given_names": "Sarah", "family_name": "Victimson", "role": "victim"},
            {"given_names": "Dean", "family_name": "Suspectson", "role": "suspect"},
        ],
        "narrative": "Officers heard shouting; the children were hiding upstairs.",
    }


def referral_about(child: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A school's referral about one child (with the child's mother)."""
    from tests.services.factories import referral_body

    body = referral_body(children=[child], **overrides)
    mother = body["family_members"][0]
    mother["family_name"] = child["family_name"]
    mother["relationships"] = mother["relationships"][:1]
    return body


NARRATIVE_WORDS = ("shouting", "hiding upstairs", "Victimson", "Suspectson", "high risk", "Dean")


async def linked_in_notifications(database_url: str, subject_ids: list[str]) -> None:
    """Wait until the notifications service knows which person each subject is (linking's
    subject.linked applied): what a record says of a child counts only from then on."""
    from sqlalchemy import func, select

    from services.notifications.models import Subject
    from shared.db import Database

    database = Database(database_url)
    wanted = [uuid.UUID(s) for s in subject_ids]

    async def known() -> bool:
        async with database.transaction() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(Subject)
                .where(Subject.subject_id.in_(wanted))
                .where(Subject.person_id.is_not(None))
                .where(Subject.source_type.is_not(None))
            )
        return count == len(wanted)

    try:
        await eventually(known, timeout=90)
    finally:
        await database.dispose()
