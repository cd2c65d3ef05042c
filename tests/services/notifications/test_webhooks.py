"""Standard Webhooks signing and verification against the specification's published test
vector, key rotation, the timestamp tolerance and malformed input; and the retry backoff."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from services.notifications import webhooks
from services.notifications.delivery import backoff
from services.notifications.webhooks import (
    MemorySeenIds,
    WebhookRejected,
    WebhookVerifier,
    parse_secret,
)
from shared.clock import ManualClock

# The specification's reference libraries' test vector (standard-webhooks, libraries/*/tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
AT_VECTOR = ManualClock(datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC))
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


def _sent(signature: str = VECTOR_SIGNATURE, **changes: str) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
        **changes,
    }


def test_signing_reproduces_the_specifications_test_vector() -> None:
    assert webhooks.sign([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )


def test_the_verifier_accepts_the_test_vector_and_returns_the_payload() -> None:
    verified = WebhookVerifier([VECTOR_SECRET], clock=AT_VECTOR).verify(VECTOR_BODY, _sent())
    assert verified.webhook_id == VECTOR_ID
    assert verified.payload == {"test": 2432232314}


def test_during_a_rotation_either_secret_verifies_a_message_signed_with_both() -> None:
    both = webhooks.sign([OTHER, VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert both.split(" ")[1] == VECTOR_SIGNATURE
    for secrets in ([VECTOR_SECRET], [OTHER], [OTHER, VECTOR_SECRET]):
        verifier = WebhookVerifier(secrets, clock=AT_VECTOR)
        assert verifier.verify(VECTOR_BODY, _sent(both)).webhook_id == VECTOR_ID
    # Unknown versions and malformed entries are skipped, not fatal.
    noisy = f"v1a,abc v2,{VECTOR_SIGNATURE[3:]} v1,!!notbase64 {VECTOR_SIGNATURE}"
    assert WebhookVerifier([VECTOR_SECRET], clock=AT_VECTOR).verify(VECTOR_BODY, _sent(noisy))


@pytest.mark.parametrize(
    ("body", "sent", "status", "reason"),
    [
        (
            VECTOR_BODY,
            _sent("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="),
            401,
            "no signature",
        ),
        (b'{"test": 2432232315}', _sent(), 401, "no signature"),
        (VECTOR_BODY, _sent(**{"webhook-id": "msg_other"}), 401, "no signature"),
        (
            VECTOR_BODY,
            {"webhook-id": VECTOR_ID, "webhook-signature": VECTOR_SIGNATURE},
            400,
            "required",
        ),
        (VECTOR_BODY, _sent(**{"webhook-timestamp": "soon"}), 400, "malformed"),
        (VECTOR_BODY, _sent(**{"webhook-id": "msg.1"}), 400, "malformed"),
        (VECTOR_BODY, _sent("garbage"), 401, "no signature"),
    ],
    ids=[
        "wrong signature",
        "body changed",
        "id changed",
        "no timestamp",
        "bad timestamp",
        "dot in id",
        "garbage signature",
    ],
)
def test_what_the_verifier_refuses(
    body: bytes, sent: dict[str, str], status: int, reason: str
) -> None:
    with pytest.raises(WebhookRejected) as refused:
        WebhookVerifier([VECTOR_SECRET], clock=AT_VECTOR).verify(body, sent)
    assert refused.value.status == status
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-301, False), (-299, True), (299, True), (301, False)]
)
def test_the_timestamp_must_be_within_the_tolerance(offset: int, accepted: bool) -> None:
    clock = ManualClock(datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC) - timedelta(seconds=offset))
    verifier = WebhookVerifier([VECTOR_SECRET], clock=clock, tolerance=timedelta(minutes=5))
    if accepted:
        assert verifier.verify(VECTOR_BODY, _sent()).webhook_id == VECTOR_ID
    else:
        with pytest.raises(WebhookRejected, match=r"too old|future"):
            verifier.verify(VECTOR_BODY, _sent())


async def test_each_id_is_claimed_once_until_it_expires() -> None:
    clock = ManualClock(datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC))
    verifier = WebhookVerifier([VECTOR_SECRET], clock=clock)
    verified = verifier.verify(VECTOR_BODY, _sent())
    assert await verifier.claim(verified) is True
    assert await verifier.claim(verified) is False
    await verifier.seen.release(verified.webhook_id)  # the application failed: try again
    assert await verifier.claim(verified) is True
    clock.advance(timedelta(minutes=11))  # past twice the tolerance: a copy now fails the time
    with pytest.raises(WebhookRejected):
        verifier.verify(VECTOR_BODY, _sent())


async def test_the_seen_ids_are_swept_when_they_have_doubled_and_expired_ones_go() -> None:
    clock = ManualClock(datetime(2027, 2, 8, 7, 0, tzinfo=UTC))
    seen = MemorySeenIds(clock)
    soon, later = clock.now() + timedelta(minutes=1), clock.now() + timedelta(minutes=30)
    floor = MemorySeenIds.SWEEP_FLOOR
    for n in range(floor):
        assert await seen.claim(f"msg_old_{n}", soon)
    assert not await seen.claim("msg_old_0", soon)  # within its tolerance: a replay
    for n in range(floor):  # live ids past the floor: none may be forgotten
        assert await seen.claim(f"msg_live_{n}", later)
    assert len(seen) == 2 * floor  # the sweep at the floor found nothing expired: kept all
    clock.advance(timedelta(minutes=5))  # the old ones have expired
    assert await seen.claim("msg_new", later)  # at twice the floor: swept
    assert len(seen) == floor + 1  # the expired half went, the live half and the new one stay
    assert await seen.claim("msg_old_1", later)  # expired: new again
    assert not any([await seen.claim(f"msg_live_{n}", later) for n in range(0, floor, 97)])


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
    ],
)
def test_a_malformed_secret_is_refused_with_the_reason(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_secret(secret)


def test_backoff_is_exponential_with_full_jitter() -> None:
    for attempt, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (10, 300.0)]:
        waits = [backoff(attempt, 5.0, 300.0) for _ in range(400)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8  # the whole range is used ...
        assert min(waits) < ceiling * 0.2  # ... from nearly nothing: full jitter
