"""The ways a message leaves Threadline: e-mail over SMTP and signed webhooks.

Each send is one attempt; its outcome says whether it arrived and, if not, whether another
attempt could help (the dispatcher schedules retries, durably, in the database).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib

from services.notifications import webhooks
from services.notifications.routing import Routing
from services.notifications.settings import NotificationsSettings
from shared.disclosures import DisclosureClient
from shared.httpclient import AiohttpPoster, Poster, Reply, Unreachable
from shared.tokens import ClientCredentials, platform_tokens


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    permanent: bool = False  # retrying cannot help (a mailbox that does not exist, 410 Gone)
    retry_after: float | None = None  # seconds the receiver asked us to wait


DELIVERED = Outcome(True)


@dataclass(frozen=True)
class Outgoing:
    """What a channel needs of a message and its delivery."""

    delivery_id: str
    webhook_id: str
    channel: str
    address: str
    endpoint_id: str | None
    subject: str
    text: str
    payload: dict[str, Any]


class EmailChannel:
    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    async def send(self, outgoing: Outgoing) -> Outcome:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = outgoing.address
        message["Subject"] = outgoing.subject
        message["Date"] = formatdate(localtime=False)
        # The same id on every attempt: a mail system that saw it once may drop a repeat.
        message["Message-ID"] = f"<{outgoing.webhook_id}@threadline.invalid>"
        message["X-Threadline-Message"] = str(outgoing.payload["data"]["message_id"])
        message.set_content(outgoing.text)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.settings.smtp_host,
                port=self.settings.smtp_port,
                username=self.settings.smtp_username,
                password=self.settings.smtp_password,
                start_tls=self.settings.smtp_starttls,
                use_tls=self.settings.smtp_tls,
                timeout=self.settings.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            return Outcome(
                False, f"SMTP refused the recipient: {error}", all(c >= 500 for c in codes)
            )
        except aiosmtplib.SMTPResponseException as error:
            return Outcome(False, f"SMTP {error.code}: {error.message}", error.code >= 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return Outcome(False, f"SMTP unavailable: {error!r}")
        return DELIVERED


WallClock = Callable[[], float]


class WebhookChannel:
    """Posts the payload signed per Standard Webhooks. The timestamp is the attempt's, from the
    wall clock (receivers compare it with theirs), and the id is the delivery's, on every try."""

    def __init__(
        self,
        settings: NotificationsSettings,
        routing: Routing,
        *,
        http: Poster | None = None,
        wall_clock: WallClock = time.time,
    ) -> None:
        self.routing = routing
        # aiohttp (shared/httpclient.py); redirects are not followed: the specification counts
        # a redirect as a failure.
        self._http = http or AiohttpPoster(
            timeout=settings.webhook_timeout_seconds,
            max_connections=settings.delivery_concurrency,
        )
        self._wall_clock = wall_clock

    async def send(self, outgoing: Outgoing) -> Outcome:
        endpoint = self.routing.webhook(outgoing.endpoint_id or "")
        if endpoint is None:
            return Outcome(
                False, f"webhook endpoint {outgoing.endpoint_id!r} is no longer configured", True
            )
        try:
            secrets = endpoint.signing_secrets()
        except ValueError as error:
            return Outcome(False, str(error))
        body = json.dumps(outgoing.payload, separators=(",", ":"), ensure_ascii=False).encode()
        sent = webhooks.headers(secrets, outgoing.webhook_id, int(self._wall_clock()), body)
        try:
            response = await self._http.post(endpoint.url, body, sent)
        except Unreachable as error:
            return Outcome(False, f"webhook unreachable: {error}")
        if 200 <= response.status < 300:
            return DELIVERED
        reason = f"webhook answered {response.status}"
        if response.status == 410:
            return Outcome(False, reason + " Gone: the receiver no longer wants these", True)
        return Outcome(False, reason, retry_after=_retry_after(response))

    async def aclose(self) -> None:
        await self._http.aclose()


def _retry_after(response: Reply) -> float | None:
    value = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), "")
    return float(value) if value.isdigit() else None


def decision_client(settings: NotificationsSettings) -> tuple[DisclosureClient, ClientCredentials]:
    """The decision point's client for a deployed service, and its token source (to close)."""
    tokens = platform_tokens(settings)
    return DisclosureClient(settings.consent_url, token=tokens), tokens
