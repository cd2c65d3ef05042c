"""Standard Webhooks (https://www.standardwebhooks.com), both ends.

The sender signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 under each of the
endpoint's ``whsec_`` secrets (several while a key rotates) and sends ``v1,<base64>`` signatures,
space-separated, in ``webhook-signature``. The HMAC itself is the ``standardwebhooks`` package's
(the specification's reference library); this module adds what it leaves to its callers: several
signatures for rotation, a tolerance and clock of our choosing, and a receiver that rejects
replays and applies each ``webhook-id`` once.

An agency's system can mount :func:`receiver_app` (or call :class:`WebhookVerifier` itself); the
tests' webhook receiver is exactly that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.clock import Clock, SystemClock

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: The specification: a symmetric secret is at least 24 bytes, at most 64 (512 bits).
SECRET_BYTES = (24, 64)
DEFAULT_TOLERANCE = timedelta(minutes=5)


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ValueError says what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from error
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        raise ValueError(
            f"a webhook secret holds {SECRET_BYTES[0]} to {SECRET_BYTES[1]} bytes, not {len(key)}"
        )
    return key


def sign(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per secret, space-separated."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    if "." in webhook_id:
        raise ValueError("a webhook id must not contain '.' (it delimits the signed content)")
    moment = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode("utf-8")
    return " ".join(Webhook(secret).sign(webhook_id, moment, text) for secret in secrets)


def headers(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


class WebhookRejected(Exception):
    """The request is not an authentic, timely webhook; ``status`` is the answer to give."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class VerifiedWebhook:
    webhook_id: str
    timestamp: datetime
    payload: Any


class SeenIds(Protocol):
    """Where a receiver remembers the webhook ids it applied (a table, Redis, …)."""

    async def claim(self, webhook_id: str, keep_until: datetime) -> bool:
        """True the first time ``webhook_id`` is claimed (until it expires), False after."""
        ...

    async def release(self, webhook_id: str) -> None:
        """Forget a claim whose application failed, so that a retry can apply it."""
        ...


class MemorySeenIds:
    """Seen ids in this process's memory, each kept until the timestamp tolerance has passed
    (an older copy fails the timestamp check anyway).

    Expired ids are swept when the map has doubled since the last sweep (at least 10,000), so
    a claim costs O(1) amortised however many ids are live: a receiver taking 700 webhooks a
    second holds about 400,000 within the tolerance, and sweeping on every claim past a fixed
    size made each claim walk them all (measured: the bench's receiver fell to 385 a second).
    """

    SWEEP_FLOOR = 10_000

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._seen: dict[str, datetime] = {}
        self._sweep_at = self.SWEEP_FLOOR
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    async def claim(self, webhook_id: str, keep_until: datetime) -> bool:
        async with self._lock:
            now = self._clock.now()
            if len(self._seen) >= self._sweep_at:
                self._seen = {key: until for key, until in self._seen.items() if until > now}
                self._sweep_at = max(self.SWEEP_FLOOR, 2 * len(self._seen))
            until = self._seen.get(webhook_id)
            if until is not None and until > now:
                return False
            self._seen[webhook_id] = keep_until
            return True

    async def release(self, webhook_id: str) -> None:
        async with self._lock:
            self._seen.pop(webhook_id, None)


class WebhookVerifier:
    """Checks a webhook's signature and timestamp, then that its id is new.

    ``secrets``: the endpoint's current secrets (during a rotation, the old and the new one).
    """

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance: timedelta = DEFAULT_TOLERANCE,
        clock: Clock | None = None,
        seen: SeenIds | None = None,
    ) -> None:
        if not secrets:
            raise ValueError("a verifier needs at least one secret")
        for secret in secrets:
            parse_secret(secret)
        self._webhooks = [Webhook(secret) for secret in secrets]
        self.tolerance = tolerance
        self._clock = clock or SystemClock()
        self.seen = seen or MemorySeenIds(self._clock)

    def verify(self, body: bytes, sent: Mapping[str, str]) -> VerifiedWebhook:
        """The webhook, if signed by one of our secrets within the tolerance; else raises."""
        lowered = {key.lower(): value for key, value in sent.items()}
        webhook_id = lowered.get("webhook-id", "")
        stamp = lowered.get("webhook-timestamp", "")
        signatures = lowered.get("webhook-signature", "")
        if not (webhook_id and stamp and signatures):
            raise WebhookRejected(
                "webhook-id, webhook-timestamp and webhook-signature are all required", 400
            )
        if "." in webhook_id or not stamp.isdigit():
            raise WebhookRejected("webhook-id or webhook-timestamp is malformed", 400)
        timestamp = datetime.fromtimestamp(int(stamp), UTC)
        now = self._clock.now()
        if timestamp < now - self.tolerance:
            raise WebhookRejected("webhook-timestamp is too old: a replay, or a clock far off")
        if timestamp > now + self.tolerance:
            raise WebhookRejected("webhook-timestamp is in the future beyond the tolerance")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise WebhookRejected("the body is not UTF-8", 400) from error
        offered = []
        for item in signatures.split(" "):
            version, _, encoded = item.partition(",")
            if version != "v1":
                continue  # another scheme (v1a) or a malformed entry: not ours to check
            try:
                offered.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                continue
        for webhook in self._webhooks:
            expected = base64.b64decode(webhook.sign(webhook_id, timestamp, text).split(",", 1)[1])
            if any(hmac.compare_digest(expected, signature) for signature in offered):
                try:
                    payload = json.loads(text)
                except ValueError as error:
                    raise WebhookRejected("the body is not JSON", 400) from error
                return VerifiedWebhook(webhook_id, timestamp, payload)
        raise WebhookRejected("no signature matches any of our secrets")

    async def claim(self, webhook: VerifiedWebhook) -> bool:
        """True the first time this id arrives within the tolerance, False for a replay."""
        return await self.seen.claim(webhook.webhook_id, webhook.timestamp + 2 * self.tolerance)


Apply = Callable[[VerifiedWebhook], Awaitable[None]]


def receiver_app(verifier: WebhookVerifier, apply: Apply, *, path: str = "/") -> Starlette:
    """An ASGI app that verifies each webhook, applies each id once, and answers as the
    specification asks: 2xx when the webhook is (or already was) applied, 4xx when refused.

    A replayed id is not applied again; it is answered ``200 {"status": "duplicate"}`` so that a
    sender retrying after a lost response stops, while a replay outside the tolerance fails its
    timestamp check (401).
    """

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            webhook = verifier.verify(body, request.headers)
        except WebhookRejected as refusal:
            return JSONResponse({"status": "rejected", "reason": refusal.reason}, refusal.status)
        if not await verifier.claim(webhook):
            return JSONResponse({"status": "duplicate", "webhook_id": webhook.webhook_id}, 200)
        try:
            await apply(webhook)
        except Exception:
            await verifier.seen.release(webhook.webhook_id)
            raise
        return JSONResponse({"status": "applied", "webhook_id": webhook.webhook_id}, 200)

    return Starlette(routes=[Route(path, receive, methods=["POST"])])
