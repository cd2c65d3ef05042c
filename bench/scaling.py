"""Scaling: how cost grows with work.

- ``linking``: the batch ``link-file`` of bench/linking.py (same generator, seed and command) at
  100,000, 1,000,000 and 5,000,000 records: wall time, records/s, peak memory (the sum of the
  process tree's RSS, sampled twice a second) and pairwise accuracy against the ground truth.
- ``pipeline``: the consumer side of bench/pipeline.py (the real ``ConsumerRunner``: an inbox row
  and the effect in one transaction per fetched batch, offsets committed after it) over 1, 2 and
  4 partitions with as many consumer processes in one group: a backlog of events is put on the
  topic, the group is started, and applied events and lag (events on the topic not yet applied)
  are sampled every half second until it is drained.

Each point is merged into ``bench/results/scaling.json`` as soon as it is measured, so a run that
is stopped keeps what it finished. Run it under the machine's benchmark lock::

    flock /tmp/threadline-bench.lock .venv/bin/python -m bench.scaling linking 100000 5000000
    flock /tmp/threadline-bench.lock .venv/bin/python -m bench.scaling pipeline

The pipeline stack lives under ``var/bench-scaling`` on ports from 24460
(``THREADLINE_BENCH_SCALING_PORT_BASE``).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.ingest import code_version
from deploy.local.stack import REPO_ROOT, Stack
from services.linking.matching import evaluation

RESULTS = Path(__file__).parent / "results"
SCALING = Path(os.environ.get("THREADLINE_BENCH_SCALING_FILE", RESULTS / "scaling.json"))
SPEED_SEED = 7  # bench/linking.py's seed for its link-file run
LINKING_SIZES = (100_000, 1_000_000, 5_000_000)
PIPELINE_INSTANCES = (1, 2, 4)
BASE = int(os.environ.get("THREADLINE_BENCH_SCALING_PORT_BASE", 24460))


def machine() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(memory.total / 2**30, 1),
        "platform": platform.platform(),
        "note": "2 cores shared with two other engineers' tests and benchmarks: figures are noisy",
    }


def merge(section: str, update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into one section of scaling.json (read, update, write)."""
    data: dict[str, Any] = json.loads(SCALING.read_text()) if SCALING.exists() else {}
    data.setdefault(section, {}).update(update)
    data["machine"] = machine()
    data["updated_at"] = datetime.now(UTC).isoformat()
    SCALING.write_text(json.dumps(data, indent=2) + "\n")
    return data


class TreeMemory:
    """Peak of the summed RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                total = sum(
                    p.memory_info().rss
                    for p in [root, *root.children(recursive=True)]
                    if p.is_running()
                )
                self.peak_mb = max(self.peak_mb, total / 2**20)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)


def _generate(count: int, path: Path) -> float:
    """Write the generated file in a child process, so its memory is gone before link-file."""
    started = time.perf_counter()
    code = (
        "import sys; from pathlib import Path;"
        "from services.linking.synthetic import generate, write_csv;"
        f"write_csv(generate({count}, seed={SPEED_SEED}).records, Path(sys.argv[1]))"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO_ROOT)
    return time.perf_counter() - started


def _accuracy(source: Path, target: Path) -> dict[str, Any]:
    with source.open(newline="") as file:
        truth = {row["record_id"]: row["true_person_id"] for row in csv.DictReader(file)}
    with target.open(newline="") as file:
        assigned = {row["record_id"]: row["person_id"] for row in csv.DictReader(file)}
    ids = list(truth)
    return evaluation.pairwise([truth[i] for i in ids], [assigned[i] for i in ids]).as_dict()


# link-file's worker processes (default: the machine's cores). Forked workers copy the pages of
# the parent's records as they touch them (reference counts), so at 5M records two workers need
# about three times one process's memory: THREADLINE_BENCH_SCALING_LINK_WORKERS=1 fits 24 GiB.
LINK_WORKERS = os.environ.get("THREADLINE_BENCH_SCALING_LINK_WORKERS")
# An input file generate(N, seed=7) already wrote (a run stopped after generating): reused as is.
REUSE_INPUT = os.environ.get("THREADLINE_BENCH_SCALING_INPUT")


def linking_point(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="threadline-scaling-", dir=REPO_ROOT / "var") as work:
        source, target = Path(work) / "in.csv", Path(work) / "out.csv"
        if REUSE_INPUT:
            source, generate_s = Path(REUSE_INPUT), 0.0
            print(f"scaling: reusing {source} ({count:,} records) …", flush=True)
        else:
            print(f"scaling: generating {count:,} records …", flush=True)
            generate_s = _generate(count, source)
        log = Path(work) / "link-file.log"
        print(f"scaling: link-file on {count:,} records …", flush=True)
        started = time.perf_counter()
        # Past a few million records, forked workers' copies of the records no longer fit in
        # memory (attempt 2 at 5M, docs/scaling.md): one process unless told otherwise.
        chosen = LINK_WORKERS or ("1" if count >= 2_000_000 else None)
        workers = ["--workers", chosen] if chosen else []
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [
                    str(REPO_ROOT / ".venv" / "bin" / "threadline"),
                    "link-file",
                    *workers,
                    str(source),
                    str(target),
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            with TreeMemory(process.pid) as memory:
                _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        progress = log.read_text().splitlines()
        if status != 0:
            raise RuntimeError(f"link-file failed: {progress[-20:]}")
        print(f"scaling: {count:,} records linked in {seconds:.0f} s; scoring …", flush=True)
        return {
            "records": count,
            "seconds": round(seconds, 1),
            "records_per_s": round(count / seconds),
            "peak_rss_tree_mb": round(memory.peak_mb, 1),
            "peak_rss_largest_process_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "generate_seconds": round(generate_s, 1) if not REUSE_INPUT else "input reused",
            "link_file_workers": int(chosen) if chosen else "default (cores)",
            "accuracy": _accuracy(source, target),
            "progress": progress[-12:],
            "measured_at": datetime.now(UTC).isoformat(),
            "code": code_version(),
        }


def run_linking(sizes: list[int]) -> None:
    merge(
        "linking",
        {
            "what": "threadline link-file on generate(N, seed=7), the records of "
            "bench/linking.py's 1M run, with 2 scoring workers (the machine's cores) below 2M "
            "records and 1 from 2M (each point's link_file_workers); time includes reading the "
            "CSV and writing the result",
        },
    )
    for count in sizes:
        data = json.loads(SCALING.read_text())
        points = data["linking"].setdefault("points", {})
        before = points.get(str(count), {})
        points[str(count)] = {
            "records": count,
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(),
        }
        merge("linking", {"points": points})
        try:
            point = linking_point(count)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as error:
            point = {"records": count, "status": f"failed: {error}"}
        points = json.loads(SCALING.read_text())["linking"]["points"]
        points[str(count)] = {"status": "measured", **point} if "seconds" in point else point
        # What an earlier run of this size found stays beside the new one.
        if before.get("status") == "measured":
            points[str(count)]["previous"] = before
        if before.get("attempts") or before.get("earlier_attempts"):
            points[str(count)]["earlier_attempts"] = before.get(
                "earlier_attempts", []
            ) + before.get("attempts", [])
        merge("linking", {"points": points})


# Pipeline -------------------------------------------------------------------------------------


async def _put_backlog(bootstrap: str, topic: str, events: int) -> float:
    """Publish ``events`` bench events straight to ``topic`` (keyed over 64 streams, as
    bench/pipeline.py's relay load is) with the services' idempotent producer."""
    from bench.pipeline import BenchTicked
    from shared.context import TraceContext, new_traceparent
    from shared.events.envelope import envelope_for, to_kafka
    from shared.kafka import make_producer

    producer = make_producer(bootstrap, client_id="bench-scaling-backlog")
    await producer.start()
    started = time.perf_counter()
    try:
        now = datetime.now(UTC)
        pending = []
        for n in range(events):
            envelope = envelope_for(
                BenchTicked(stream=f"stream-{n % 64}", sequence=n),
                service="bench",
                trace=TraceContext(correlation_id=str(n), traceparent=new_traceparent()),
                now=now,
            )
            record = to_kafka(envelope)
            pending.append(
                await producer.send(
                    topic, value=record.value, key=record.key, headers=record.headers
                )
            )
        for delivery in pending:
            await delivery
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _consume(bootstrap: str, database_url: str, topic: str, group: str) -> None:
    """One consumer instance of ``group`` (a process of its own), until terminated."""
    import signal

    from bench.pipeline import BenchTicked, plumbing
    from shared.consumer import ConsumerRunner, HandlerRegistry
    from shared.db import Database
    from shared.kafka import make_consumer, make_producer

    database = Database(database_url, pool_size=2)
    registry = HandlerRegistry()

    @registry.on(BenchTicked)
    async def applied(*_: object) -> None:
        """The inbox row is the effect under test, as in bench/pipeline.py."""

    consumer = make_consumer(bootstrap, group_id=group, client_id=f"{group}-{os.getpid()}")
    producer = make_producer(bootstrap, client_id=f"{group}-dlq-{os.getpid()}")
    await consumer.start()
    await producer.start()
    runner = ConsumerRunner(
        name=group,
        database=database,
        plumbing=plumbing,
        consumer=consumer,
        producer=producer,
        registry=registry,
        topics=[topic],
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
    try:
        await runner.run()
    finally:
        await consumer.stop()
        await producer.stop()
        await database.dispose()


async def _applied(database_url: str, group: str) -> int:
    import asyncpg

    from shared.db import asyncpg_dsn

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM bench.inbox WHERE consumer = $1", group
        )
    finally:
        await connection.close()
    return int(count)


def pipeline_point(stack: Stack, instances: int, events: int) -> dict[str, Any]:
    from shared.kafka import ensure_topics

    topic = f"threadline.bench.scale{instances}.v1"
    group = f"bench-scale-{instances}"
    bootstrap = stack.kafka.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, [topic], partitions=instances))
    print(f"scaling: {events:,} events onto {topic} ({instances} partitions) …", flush=True)
    backlog_s = asyncio.run(_put_backlog(bootstrap, topic, events))
    environment = {**os.environ, "THREADLINE_LOG_LEVEL": "WARNING"}
    print(f"scaling: {instances} consumer instance(s) draining it …", flush=True)
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.scaling",
                "consume",
                bootstrap,
                stack.database_url,
                topic,
                group,
            ],
            cwd=REPO_ROOT,
            env=environment,
        )
        for _ in range(instances)
    ]
    series: list[dict[str, float]] = []
    cpu: dict[int, float] = {}
    first_applied_s: float | None = None
    try:
        applied = 0
        while applied < events and time.perf_counter() - started < 600:
            time.sleep(0.5)
            applied = asyncio.run(_applied(stack.database_url, group))
            at = time.perf_counter() - started
            if applied and first_applied_s is None:
                first_applied_s = at
            series.append({"t_s": round(at, 2), "applied": applied, "lag": events - applied})
            for process in processes:
                try:
                    times = psutil.Process(process.pid).cpu_times()
                    cpu[process.pid] = times.user + times.system
                except psutil.Error:
                    pass
        drained_s = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    per_second = []
    previous = {"t_s": 0.0, "applied": 0}
    for sample in series:
        if sample["t_s"] - previous["t_s"] >= 1.0 or sample is series[-1]:
            span = sample["t_s"] - previous["t_s"]
            per_second.append(
                {
                    "t_s": sample["t_s"],
                    "events_per_s": round((sample["applied"] - previous["applied"]) / span, 1),
                }
            )
            previous = sample
    steady = drained_s - (first_applied_s or 0.0)
    return {
        "partitions": instances,
        "consumer_instances": instances,
        "events": events,
        "applied": series[-1]["applied"] if series else 0,
        "backlog_put_seconds": round(backlog_s, 2),
        "group_join_to_first_applied_s": round(first_applied_s or 0.0, 2),
        "drain_seconds": round(drained_s, 2),
        "events_per_s": round(events / drained_s, 1),
        "events_per_s_after_first_applied": round(events / steady, 1) if steady else None,
        "peak_events_per_s": max((p["events_per_s"] for p in per_second), default=0),
        "max_lag": events,
        "consumer_cpu_seconds": round(sum(cpu.values()), 1),
        "series": series,
        "throughput_per_second": per_second,
        "measured_at": datetime.now(UTC).isoformat(),
    }


def run_pipeline(instances: list[int], events: int) -> None:
    from bench.pipeline import _create_bench_schema
    from services.catalogue import MIGRATED
    from shared.migrations import upgrade

    stack = Stack.isolated("bench-scaling", base_port=BASE, durable=True)
    stack.stop_services()
    stack.wipe()
    stack.start_infrastructure()
    merge(
        "pipeline",
        {
            "what": "a backlog of bench events drained by N consumer processes of one group over "
            "N partitions (ConsumerRunner: inbox row per event, one transaction per fetched "
            "partition batch, offsets committed after it); PostgreSQL fsync on; lag = events on "
            "the topic not yet applied (inbox rows), sampled every 0.5 s",
            "events": events,
        },
    )
    try:
        for service in MIGRATED:
            upgrade(service, stack.database_url)
        asyncio.run(_create_bench_schema(stack.database_url))
        for count in instances:
            point = pipeline_point(stack, count, events)
            print(
                f"scaling: {count} partition(s)/instance(s): {point['events_per_s']} events/s",
                flush=True,
            )
            points = json.loads(SCALING.read_text())["pipeline"].setdefault("points", {})
            points[str(count)] = point
            merge("pipeline", {"points": points})
    finally:
        stack.stop_infrastructure()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "linking":
        run_linking([int(size) for size in sys.argv[2:]] or list(LINKING_SIZES))
    elif command == "pipeline":
        sizes = [int(n) for n in sys.argv[2:]] or list(PIPELINE_INSTANCES)
        run_pipeline(sizes, int(os.environ.get("THREADLINE_BENCH_SCALING_EVENTS", 30_000)))
    elif command == "consume":
        asyncio.run(_consume(*sys.argv[2:6]))
