"""The shape every Threadline service shares: an HTTP app whose lifespan runs the outbox relay,
the Kafka consumers and the timer scheduler of that service, each restarted if it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncSession

from shared import outbox, timers
from shared.auth import TokenValidator, declare_bearer_security, install_auth
from shared.clock import Clock, SystemClock
from shared.consumer import ConsumerRunner, HandlerRegistry
from shared.db import Database, asyncpg_dsn
from shared.errors import install_error_handlers
from shared.groupcommit import BatchWriter, GroupCommit, Item, Result
from shared.http import BodyLimitMiddleware, CorrelationMiddleware
from shared.kafka import make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.plumbing import Plumbing
from shared.ratelimit import RateLimiter
from shared.settings import ServiceSettings
from shared.timers import TimerHandler, TimerScheduler

log = get_logger(__name__)

BackgroundWorker = Callable[["ServiceRuntime"], Awaitable[None]]


@dataclass
class ServiceDefinition:
    """What a service contributes; everything else is the same for all services."""

    name: str
    title: str
    description: str
    plumbing: Plumbing
    routers: Sequence[APIRouter] = ()
    consumers: HandlerRegistry | None = None
    timer_handlers: dict[str, TimerHandler] = field(default_factory=dict)
    # The database role the service's connections assume (e.g. one that may only append to a
    # ledger); None runs with the login user's own privileges.
    database_role: str | None = None
    # Further background workers of the service (e.g. a delivery dispatcher), by name: each runs
    # with the relay, consumers and timers, supervised the same way, until cancelled.
    workers: Mapping[str, BackgroundWorker] = field(default_factory=dict)


class ServiceRuntime:
    """The long-lived parts of one service process."""

    def __init__(
        self,
        definition: ServiceDefinition,
        settings: ServiceSettings,
        clock: Clock,
        *,
        background: bool = True,
    ):
        self.definition = definition
        # False: an API process whose relay, consumers and timers run elsewhere (`threadline work`)
        self.background = background
        self.settings = settings
        self.clock = clock
        self.database = Database(
            settings.database_url,
            application_name=f"threadline-{definition.name}",
            role=definition.database_role,
        )
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.consumer_runner: ConsumerRunner | None = None
        self.scheduler: TimerScheduler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._group_commits: dict[str, GroupCommit[Any, Any]] = {}
        self.kafka_ready = asyncio.Event()
        self.stopping = False

    @property
    def plumbing(self) -> Plumbing:
        return self.definition.plumbing

    def group_commit(
        self,
        name: str,
        write_batch: BatchWriter[Item, Result],
        *,
        max_batch: int = 256,
        transaction: bool = True,
    ) -> GroupCommit[Item, Result]:
        """The process's group commit called ``name`` (created on first use, stopped by stop())."""
        existing = self._group_commits.get(name)
        if existing is None:
            existing = GroupCommit(
                asyncpg_dsn(self.settings.database_url),
                write_batch,
                name=name,
                application_name=f"threadline-{self.definition.name}",
                max_batch=max_batch,
                transaction=transaction,
            )
            self._group_commits[name] = existing
        return existing

    async def start(self) -> None:
        if not self.background:
            return
        self._tasks.append(asyncio.create_task(self._kafka_side(), name="kafka-side"))
        if self.settings.timers_enabled and self.definition.timer_handlers:
            self.scheduler = TimerScheduler(
                self.database,
                self.plumbing,
                self.definition.timer_handlers,
                clock=self.clock,
                poll_interval=self.settings.timers_poll_seconds,
                batch_size=self.settings.timers_batch_size,
            )
            self._tasks.append(self._supervised("timers", self.scheduler.run))
        for name, worker in self.definition.workers.items():
            self._tasks.append(self._supervised(name, functools.partial(worker, self)))

    async def _kafka_side(self) -> None:
        """Start the producer when Kafka is reachable, then the relay and the consumers."""
        client = f"threadline-{self.definition.name}"
        while self.producer is None and not self.stopping:
            producer = make_producer(self.settings.kafka_bootstrap_servers, client_id=client)
            try:
                await producer.start()
                self.producer = producer
            except Exception as error:
                log.warning("kafka.unavailable", error=repr(error))
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(2.0)
        if self.stopping or self.producer is None:
            return  # stopped before Kafka answered: start nothing that would outlive stop()
        self.kafka_ready.set()
        if self.settings.relay_enabled:
            self.relay = OutboxRelay(
                self.database,
                self.plumbing,
                self.producer,
                batch_size=self.settings.relay_batch_size,
                lease=timedelta(seconds=self.settings.relay_lease_seconds),
                poll_interval=self.settings.relay_poll_seconds,
                clock=self.clock,
                new_producer=self._new_relay_producer,
            )
            self._tasks.append(self._supervised("relay", self.relay.run))
        registry = self.definition.consumers
        if self.settings.consumers_enabled and registry is not None and registry.handlers:
            self._tasks.append(self._supervised("consumers", self._consume))

    async def _new_relay_producer(self) -> AIOKafkaProducer:
        """A fresh producer for a relay whose producer broke (``outbox.BROKEN_PRODUCER``)."""
        client = f"threadline-{self.definition.name}-relay"
        producer = make_producer(self.settings.kafka_bootstrap_servers, client_id=client)
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _consume(self) -> None:
        registry = self.definition.consumers
        assert registry is not None
        consumer: AIOKafkaConsumer = make_consumer(
            self.settings.kafka_bootstrap_servers,
            group_id=self.settings.consumer_group,
            client_id=f"threadline-{self.definition.name}-consumer",
            max_poll_records=self.settings.consumer_batch_size,
        )
        # The dead-letter producer is the consumer's own, made afresh each time the supervisor
        # restarts it: a producer a broker restart broke (OutOfOrderSequenceNumber, as the
        # relay's did under `make chaos`) would otherwise fail every dead-lettering for good.
        dead_letters = make_producer(
            self.settings.kafka_bootstrap_servers,
            client_id=f"threadline-{self.definition.name}-dlq",
        )
        await consumer.start()
        try:
            await dead_letters.start()
            self.consumer_runner = ConsumerRunner(
                name=self.settings.consumer_group,
                database=self.database,
                plumbing=self.plumbing,
                consumer=consumer,
                producer=dead_letters,
                registry=registry,
                max_attempts=self.settings.consumer_max_attempts,
                backoff=self.settings.consumer_backoff_seconds,
                backoff_max=self.settings.consumer_backoff_max_seconds,
                max_batch=self.settings.consumer_batch_size,
            )
            if self.stopping:
                return
            await self.consumer_runner.run()
        finally:
            # Commits what is done (offsets go at most once a second under load), then leaves
            # the group. Bounded: a broker that is gone must not keep the service from stopping;
            # whatever is not committed is redelivered and the inbox makes it a no-op.
            if self.consumer_runner is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.consumer_runner.commit_done(), timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout=10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dead_letters.stop(), timeout=10)

    def _supervised(self, name: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def keep_running() -> None:
            while not self.stopping:
                try:
                    await work()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.exception("worker.crashed", worker=name, error=repr(error))
                    await asyncio.sleep(2.0)

        return asyncio.create_task(keep_running(), name=name)

    async def stop(self, grace_seconds: float = 15.0) -> None:
        """Stop the workers, then the clients; wait at most ``grace_seconds`` for the workers."""
        self.stopping = True
        for worker in (self.relay, self.scheduler, self.consumer_runner):
            if worker is not None:
                worker.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in stuck:
                log.error("worker.stop_timeout", worker=task.get_name())
        for group_commit in self._group_commits.values():
            await group_commit.stop()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), timeout=10)
        await self.database.dispose()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.database.ping(), timeout=2.0)
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"unavailable: {type(error).__name__}"
        if not self.background:
            return checks  # an API process without Kafka clients: the database is all it needs
        if self.producer is None:
            checks["kafka"] = "unavailable: not connected"
        else:
            try:
                metadata = await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 3.0)
                checks["kafka"] = "ok" if metadata.brokers() else "unavailable: no brokers"
            except Exception as error:
                checks["kafka"] = f"unavailable: {type(error).__name__}"
        return checks

    async def metrics(self) -> bytes:
        registry = CollectorRegistry()
        labels = {"service": self.definition.name}
        async with self.database.transaction() as session:
            backlog = await outbox.backlog(session, self.plumbing)
            pending, overdue = await timers.counts(session, self.plumbing, self.clock.now())
        gauges = {
            "threadline_outbox_backlog": ("Outbox events not yet published to Kafka", backlog),
            "threadline_timers_pending": ("Timers scheduled, not yet fired or cancelled", pending),
            "threadline_timers_overdue": ("Pending timers whose due time has passed", overdue),
            "threadline_consumer_lag": (
                "Records behind the high-water mark in this service's consumer group",
                self.consumer_runner.lag() if self.consumer_runner else 0,
            ),
        }
        for name, (help_text, value) in gauges.items():
            Gauge(name, help_text, list(labels), registry=registry).labels(**labels).set(value)
        counters = {
            "threadline_outbox_published": self.relay.published_total if self.relay else 0,
            "threadline_events_applied": self.consumer_runner.applied
            if self.consumer_runner
            else 0,
            "threadline_events_duplicate": (
                self.consumer_runner.duplicates if self.consumer_runner else 0
            ),
            "threadline_events_dead_lettered": (
                self.consumer_runner.dead_lettered if self.consumer_runner else 0
            ),
            "threadline_timers_fired": self.scheduler.fired_total if self.scheduler else 0,
        }
        for name, value in counters.items():
            counter = Counter(name, name.replace("_", " "), list(labels), registry=registry)
            counter.labels(**labels).inc(value)
        if self._group_commits:
            writer_labels = [*labels, "writer"]
            batches = Counter(
                "threadline_group_commit_batches",
                "Transactions committed by a group-commit writer",
                writer_labels,
                registry=registry,
            )
            items = Counter(
                "threadline_group_commit_items",
                "Items (e.g. referrals) written by a group-commit writer",
                writer_labels,
                registry=registry,
            )
            largest = Gauge(
                "threadline_group_commit_largest_batch",
                "The most items one transaction of a group-commit writer has held",
                writer_labels,
                registry=registry,
            )
            for writer in self._group_commits.values():
                batches.labels(**labels, writer=writer.name).inc(writer.batches)
                items.labels(**labels, writer=writer.name).inc(writer.items)
                largest.labels(**labels, writer=writer.name).set(writer.largest_batch)
        return generate_latest(registry)


#: The collector's youngest-generation threshold in serving processes (Python's is 700; see
#: ServiceSettings.gc_young_threshold). The benchmarks' in-process timings use it too.
SERVING_GC_YOUNG_THRESHOLD = 50_000


def freeze_if_asked(settings: ServiceSettings) -> int:
    """Once a process has started, move what it has made so far out of the garbage collector's
    full passes (``ServiceSettings.gc_freeze_after_start``) and sweep its youngest generation
    less often (``gc_young_threshold``); returns how many objects are frozen."""
    if settings.gc_freeze_after_start:
        gc.collect()
        gc.freeze()
    if settings.gc_young_threshold is not None:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(settings.gc_young_threshold, middle, old)
    return gc.get_freeze_count()


async def run_background(definition: ServiceDefinition, settings: ServiceSettings) -> None:
    """Run a service's relay, consumers and timers without its API, until SIGTERM or SIGINT
    (``threadline work``, beside API processes whose ``background`` is "separate")."""
    configure_logging(f"{definition.name}-work", settings.log_level, settings.log_json)
    runtime = ServiceRuntime(definition, settings, SystemClock(), background=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.start()
    frozen = freeze_if_asked(settings)
    log.info("service.background_started", service=definition.name, gc_frozen=frozen)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        log.info("service.background_stopped", service=definition.name)


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


async def session_scope(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed when the endpoint returns, before the response."""
    async with runtime_of(request).database.transaction() as session:
        yield session


# Dependencies are coroutines: FastAPI runs a plain ``def`` dependency in a worker thread, and
# the hop to the thread pool and back cost more than everything else these do put together.
async def _runtime_dependency(request: Request) -> ServiceRuntime:
    return runtime_of(request)


async def _clock_dependency(request: Request) -> Clock:
    return runtime_of(request).clock


RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime_dependency)]
SessionDep = Annotated[AsyncSession, Depends(session_scope, scope="function")]
ClockDep = Annotated[Clock, Depends(_clock_dependency)]


def _operations_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is serving")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: database and Kafka reachable")
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(runtime: RuntimeDep) -> Response:
        return Response(await runtime.metrics(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_service_app(
    definition: ServiceDefinition,
    settings: ServiceSettings,
    *,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    """Build the FastAPI app of a service, with its background workers in the lifespan."""

    validator = TokenValidator(settings.auth_issuers, settings.auth_audience)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if configure_logs:
            configure_logging(definition.name, settings.log_level, settings.log_json)
        runtime = ServiceRuntime(
            definition,
            settings,
            clock or SystemClock(),
            background=settings.background == "in-process",
        )
        app.state.runtime = runtime
        await runtime.start()
        log.info(
            "service.started",
            service=definition.name,
            port=settings.port,
            gc_frozen=freeze_if_asked(settings),
        )
        try:
            yield {}
        finally:
            await runtime.stop()
            await validator.aclose()
            log.info("service.stopped", service=definition.name)

    app = FastAPI(
        title=definition.title,
        description=definition.description,
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.definition = definition  # what `threadline work` runs, bound as the app binds it
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CorrelationMiddleware)
    install_error_handlers(app)
    install_auth(app, validator)
    declare_bearer_security(app, definition.routers)
    app.include_router(_operations_router())
    for router in definition.routers:
        app.include_router(router)
    return app
