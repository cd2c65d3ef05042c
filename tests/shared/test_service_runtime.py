"""What an operator sees of every service: liveness, readiness and metrics."""

from __future__ import annotations

import socket

from services.consent.app import create_app as create_consent
from services.referrals.app import create_app as create_referrals
from shared.events.topics import Topic
from shared.kafka import make_producer
from tests.services.factories import referral_body
from tests.support.apps import consent_settings, referrals_settings, serving
from tests.support.kafka import eventually
from tests.support.tokens import SCHOOL


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ready_when_database_and_kafka_are_reachable(
    database_url: str, bootstrap: str
) -> None:
    app = create_consent(consent_settings(database_url, bootstrap), configure_logs=False)
    async with serving(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout=20)
        body = (await client.get("/readyz")).json()
        assert body == {"status": "ready", "checks": {"database": "ok", "kafka": "ok"}}


async def test_not_ready_when_kafka_is_unreachable(database_url: str) -> None:
    nowhere = f"127.0.0.1:{_free_port()}"
    app = create_consent(consent_settings(database_url, nowhere), configure_logs=False)
    async with serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
        response = await client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["kafka"].startswith("unavailable")


async def test_not_ready_when_the_database_is_unreachable(bootstrap: str) -> None:
    url = f"postgresql+asyncpg://threadline@127.0.0.1:{_free_port()}/threadline"
    app = create_consent(consent_settings(url, bootstrap), configure_logs=False)
    async with serving(app) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unavailable")


async def test_metrics_report_outbox_timers_and_consumer_lag(
    database_url: str, bootstrap: str
) -> None:
    app = create_referrals(referrals_settings(database_url, bootstrap), configure_logs=False)
    async with serving(app) as client:
        posted = await client.post("/v1/referrals", json=referral_body(), headers=SCHOOL)
        assert posted.status_code == 201, posted.text
        text = (await client.get("/metrics")).text
    for name in (
        "threadline_outbox_backlog",
        "threadline_timers_pending",
        "threadline_timers_overdue",
        "threadline_consumer_lag",
        "threadline_outbox_published_total",
        "threadline_events_dead_lettered_total",
    ):
        assert f'{name}{{service="referrals"}}' in text, name
    pending = next(
        line for line in text.splitlines() if line.startswith("threadline_timers_pending{")
    )
    assert float(pending.rsplit(" ", 1)[1]) >= 1


async def test_the_consumer_batch_size_setting_reaches_the_kafka_consumer_and_the_runner(
    database_url: str, bootstrap: str
) -> None:
    """``THREADLINE_<SERVICE>_CONSUMER_BATCH_SIZE``: records fetched per poll and applied per
    transaction are the same number, so a bigger batch is one transaction, not several."""
    settings = consent_settings(database_url, bootstrap, consumer_batch_size=250)
    app = create_consent(settings, configure_logs=False)
    async with serving(app):
        runtime = app.state.runtime

        async def running() -> bool:
            return runtime.consumer_runner is not None

        await eventually(running, timeout=20)
        assert runtime.consumer_runner.max_batch == 250
        assert runtime.consumer_runner.consumer._max_poll_records == 250


async def test_dead_letters_do_not_depend_on_the_services_shared_producer(
    database_url: str, bootstrap: str
) -> None:
    """The consumers dead-letter through a producer of their own, made afresh whenever the
    supervisor restarts them: the shared producer breaking (a broker restart broke the relay's
    with OutOfOrderSequenceNumber under `make chaos`) cannot stop a poison record going to the
    dead-letter topic."""
    app = create_consent(consent_settings(database_url, bootstrap), configure_logs=False)
    async with serving(app):
        runtime = app.state.runtime

        async def running() -> bool:
            return runtime.consumer_runner is not None

        await eventually(running, timeout=20)
        runner = runtime.consumer_runner
        assert runner.producer is not runtime.producer
        await runtime.producer.stop()  # the shared producer is gone
        before = runner.dead_lettered
        poison = make_producer(bootstrap, client_id="test-poison")
        await poison.start()
        try:
            await poison.send_and_wait(Topic.REFERRALS.value, b"not an event", key=b"poison")
        finally:
            await poison.stop()

        async def dead_lettered() -> bool:
            return runner.dead_lettered > before

        await eventually(dead_lettered, timeout=60)


async def test_a_serving_process_freezes_its_startup_objects_out_of_full_collections(
    database_url: str, bootstrap: str
) -> None:
    """A full collection of a service's startup objects took ~80 ms, in the middle of requests;
    frozen, the collector's full passes leave them out. Off unless asked (``threadline serve``
    asks), since frozen objects are never collected."""
    import gc

    before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    plain = create_consent(consent_settings(database_url, bootstrap), configure_logs=False)
    async with serving(plain) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() == before
        assert gc.get_threshold() == thresholds
    settings = consent_settings(
        database_url, bootstrap, gc_freeze_after_start=True, gc_young_threshold=50_000
    )
    frozen = create_consent(settings, configure_logs=False)
    try:
        async with serving(frozen) as client:
            assert gc.get_freeze_count() > before + 10_000  # the modules, the app, its metadata
            # the youngest generation is swept after 50,000 allocations; the others as before
            assert gc.get_threshold() == (50_000, *thresholds[1:])
            assert (await client.get("/healthz")).status_code == 200
    finally:
        gc.unfreeze()  # the test process goes on making and dropping apps
        gc.set_threshold(*thresholds)
