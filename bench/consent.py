"""The consent ledger under load, on its own PostgreSQL (fsync on) and Kafka:

- a ledger of ``ledger_entries`` (10 million by default) bulk-loaded with COPY, its chain
  computed in a tight loop with the same hashing code the service uses;
- ``verify_1m_s``: the time to recompute and check the last 1 million entries of that chain;
- ledger appends per second through the group-commit writer in-process (decisions decided and
  recorded, no HTTP): what the ledger itself sustains;
- ``POST /v1/disclosures/decide`` against the real service process (two uvicorn workers, so two
  writers contending for the chain lock, as two replicas would) driven by ``wrk``: latency p50/p99
  at a moderate load (``decide_p50_ms``, ``decide_p99_ms``) and throughput at saturation
  (``decisions_per_s``);
- afterwards every entry the benchmark appended is verified, so the numbers are for a chain that
  holds.

Ports from ``THREADLINE_BENCH_CONSENT_PORT_BASE`` (24410). Run it under
``flock /tmp/threadline-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import OKPKey

from bench.ingest import wrk_command
from deploy.local.stack import REPO_ROOT, Stack
from services.consent import agreements as agreements_module
from services.consent.ledger import GENESIS_HASH, entry_hash, plain, verify_copy
from services.consent.models import WRITER_ROLE
from services.consent.service import Decide
from services.consent.writer import LedgerWriter
from shared.auth import Principal
from shared.db import Database, asyncpg_dsn
from shared.disclosures import DisclosureRequest
from shared.ids import uuid7
from shared.kafka import ensure_topics
from shared.migrations import upgrade

BASE = int(os.environ.get("THREADLINE_BENCH_CONSENT_PORT_BASE", 24410))
ENTRIES = int(os.environ.get("THREADLINE_BENCH_CONSENT_ENTRIES", 10_000_000))
QUICK_ENTRIES = 200_000
# The offered rate at which decide latency is measured (open loop).
RATE = float(os.environ.get("THREADLINE_BENCH_CONSENT_RATE", 50))
# Keep the loaded ledger of an earlier run (var/bench-consent) and measure again on it.
REUSE = os.environ.get("THREADLINE_BENCH_CONSENT_REUSE") == "1"
SUBJECT_POOL = 500_000
ISSUER = "https://bench.issuer.threadline"
AGREEMENT = "demo-mash-isa-2026"
COPY_CHUNK = 50_000
RESULTS_FILE = Path(__file__).parent / "results" / "consent.json"
COLUMNS = [
    "sequence",
    "entry_id",
    "kind",
    "recorded_at",
    "subject_ids",
    "from_agency",
    "to_agency",
    "purpose",
    "lawful_basis",
    "outcome",
    "consent_status",
    "payload",
    "prev_hash",
    "hash",
]
# The secondary indexes of migration 0003, dropped for the bulk load and built again after it.
INDEXES = [
    "ALTER TABLE consent.ledger ADD CONSTRAINT uq_ledger_entry_id UNIQUE (entry_id)",
    "CREATE INDEX ix_ledger_subject_ids ON consent.ledger USING gin (subject_ids)",
    "CREATE INDEX ix_ledger_kind_recorded_at ON consent.ledger (kind, recorded_at)",
]


def _stack() -> Stack:
    return Stack.isolated("bench-consent", base_port=BASE, durable=True)


def request_body(subject: uuid.UUID) -> dict[str, Any]:
    """A school asking to share a concern with the MASH (every template field filled)."""
    return {
        "requester": {
            "organisation_code": "100001",
            "agency": "school",
            "name": "Bench DSL",
            "role": "Designated Safeguarding Lead",
        },
        "recipient": {"agency": "mash", "organisation_code": "MASH-DEMO"},
        "subject_ids": [str(subject)],
        "data_categories": ["concern_details", "attendance"],
        "special_category": False,
        "purpose": "safeguarding_referral",
        "lawful_basis": "public_task",
        "consent": {"sought": False, "why_not_sought": "Asking could increase the risk."},
        "necessity_and_proportionality": "The MASH needs the concern to decide on a response.",
        "data_minimisation": "Only the concern and attendance, not the full pupil record.",
        "agreement_id": AGREEMENT,
        "decided_by": {"name": "Bench DSL", "role": "Designated Safeguarding Lead"},
    }


def _payload(subject: uuid.UUID, n: int) -> dict[str, Any]:
    """The payload of a recorded decision, shaped as the service writes it."""
    return {
        "requester": {
            "organisation_code": f"{100000 + n % 500}",
            "agency": "school",
            "name": "Bench DSL",
            "role": "Designated Safeguarding Lead",
        },
        "recipient": {"agency": "mash", "organisation_code": "MASH-DEMO", "user": None},
        "asked_by_client": {
            "subject": f"client-{100000 + n % 500}",
            "organisation_code": f"{100000 + n % 500}",
            "agency": "school",
        },
        "data_categories": ["concern_details", "attendance"],
        "special_category": False,
        "requested_basis": "public_task",
        "article9_condition": None,
        "schedule1_condition": None,
        "paragraph18_reason": None,
        "consent_sought": False,
        "why_not_sought": "Asking could increase the risk.",
        "consent_by_subject": [
            {
                "subject_id": str(subject),
                "status": "not_recorded",
                "consent_ids": [],
                "competent_child": False,
            }
        ],
        "necessity_and_proportionality": "The MASH needs the concern to decide on a response.",
        "data_minimisation": "Only the concern and attendance, not the full pupil record.",
        "agreement": {
            "id": AGREEMENT,
            "name": "Demo MASH ISA",
            "transfer": "API",
            "retention": "r",
        },
        "decided_by": {"name": "Bench DSL", "role": "Designated Safeguarding Lead"},
        "override": None,
        "consent_overridden": False,
        "reasons": ["shared without consent on the basis public_task"],
        "withdrawals_applied": [],
    }


async def bulk_load(url: str, count: int, subjects: list[uuid.UUID]) -> dict[str, Any]:
    """``count`` chained entries by COPY, the chain computed here as the service computes it."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "DROP INDEX consent.ix_ledger_subject_ids;"
            "DROP INDEX consent.ix_ledger_kind_recorded_at;"
            "ALTER TABLE consent.ledger DROP CONSTRAINT uq_ledger_entry_id"
        )
        sample = _payload(subjects[0], 1)
        assert plain(sample) == sample, "bench payloads must be plain JSON (what the ledger hashes)"
        started = time.perf_counter()
        hashing = 0.0
        previous = GENESIS_HASH
        first = datetime.now(UTC) - timedelta(days=365)
        step = timedelta(days=365) / count
        for base in range(0, count, COPY_CHUNK):
            chunk_started = time.perf_counter()
            records = []
            for sequence in range(base + 1, min(count, base + COPY_CHUNK) + 1):
                subject = subjects[sequence % len(subjects)]
                payload = _payload(subject, sequence)  # plain JSON types already
                recorded_at = first + step * sequence
                columns: dict[str, Any] = {
                    "sequence": sequence,
                    # Time-ordered, as the service makes them (services/consent/ledger.seal).
                    "entry_id": uuid7(int(recorded_at.timestamp() * 1_000_000) * 1000),
                    "kind": "disclosure.decided",
                    "recorded_at": recorded_at,
                    "subject_ids": [subject],
                    "from_agency": "school",
                    "to_agency": "mash",
                    "purpose": "safeguarding_referral",
                    "lawful_basis": "public_task",
                    "outcome": "share",
                    "consent_status": "not_recorded",
                    "payload": payload,
                    "prev_hash": previous,
                }
                digest = entry_hash(**columns)
                records.append(
                    (
                        *[columns[name] for name in COLUMNS[:11]],
                        orjson.dumps(payload).decode("utf-8"),
                        previous,
                        digest,
                    )
                )
                previous = digest
            hashing += time.perf_counter() - chunk_started
            await connection.copy_records_to_table(
                "ledger", schema_name="consent", records=records, columns=COLUMNS
            )
            if (base // COPY_CHUNK) % 20 == 0:
                done = min(count, base + COPY_CHUNK)
                print(f"  loaded {done:,} entries ({time.perf_counter() - started:.0f} s)")
        loaded = time.perf_counter() - started
        index_started = time.perf_counter()
        for statement in INDEXES:
            await connection.execute(statement)
        await connection.execute("VACUUM ANALYZE consent.ledger")
        indexed = time.perf_counter() - index_started
        size = await connection.fetchval("SELECT pg_total_relation_size('consent.ledger')")
    finally:
        await connection.close()
    return {
        "entries": count,
        "load_s": round(loaded, 1),
        "chain_compute_s": round(hashing, 1),
        "index_and_analyze_s": round(indexed, 1),
        "table_bytes": int(size),
    }


async def verify_range(url: str, after: int) -> tuple[float, int, bool]:
    """Recompute the chain after entry ``after``: (seconds, entries, intact)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            start_hash = (
                GENESIS_HASH
                if after == 0
                else bytes(
                    await connection.fetchval(
                        "SELECT hash FROM consent.ledger WHERE sequence = $1", after
                    )
                )
            )
            started = time.perf_counter()
            report = await verify_copy(connection, after_sequence=after, after_hash=start_hash)
            seconds = time.perf_counter() - started
    finally:
        await connection.close()
    return seconds, report.entries_checked, report.intact


async def in_process_appends(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Decisions through the group-commit writer alone (no HTTP, no auth)."""
    sharing = agreements_module.load(REPO_ROOT / "config" / "consent" / "agreements.toml")
    agreement = sharing.get(AGREEMENT)
    assert agreement is not None
    principal = Principal(
        subject="bench",
        issuer=ISSUER,
        organisation_code="100001",
        agency="school",
        scopes=frozenset({"disclosures:decide"}),
        token_id=None,
    )
    database = Database(url, pool_size=2, role=WRITER_ROLE)
    writer = LedgerWriter(database, lambda: datetime.now(UTC))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            request = DisclosureRequest.model_validate(request_body(uuid.uuid4()))
            started = time.perf_counter()
            await writer.submit(Decide(request, agreement, principal))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await writer.stop()
    await database.dispose()
    latencies.sort()
    return {
        "concurrency": concurrency,
        "decisions": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "batches": writer.batches,
        "mean_batch": round(writer.commands / max(1, writer.batches), 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


WRK_SCRIPT = r"""
local bodies = {
%(bodies)s
}
local auth = "%(auth)s"
local counter = 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  counter = tid * 7919
end
function request()
  counter = counter + 1
  local i = (counter %% #bodies) + 1
  return wrk.format("POST", "/v1/disclosures/decide",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%%.0f,"requests":%%.0f,"non_2xx":%%.0f,"errors":%%.0f,' ..
    '"p50_us":%%.0f,"p90_us":%%.0f,"p99_us":%%.0f,"max_us":%%.0f}\n',
    summary.duration, summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _token_and_issuer() -> tuple[str, str]:
    key = OKPKey.generate_key(
        "Ed25519", parameters={"alg": "Ed25519", "use": "sig"}, private=True, auto_kid=True
    )
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "client-100001",
        "aud": "threadline:consent",
        "iat": now,
        "nbf": now,
        "exp": now + 7200,
        "scope": "disclosures:decide",
        "org": "100001",
        "agency": "school",
    }
    token = jwt.encode({"alg": "Ed25519", "kid": key.kid}, claims, key, algorithms=["Ed25519"])
    issuers = json.dumps([{"issuer": ISSUER, "jwks": {"keys": [key.as_dict(private=False)]}}])
    return token, issuers


def _wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: float, log: Path
) -> dict[str, Any]:
    result = subprocess.run(
        wrk_command(wrk, script, url, connections, seconds),
        capture_output=True,
        text=True,
        check=False,
    )
    log.write_text(result.stdout + result.stderr)
    match = re.search(r"^WRKJSON (\{.*\})$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed; see {log}")
    report: dict[str, Any] = json.loads(match.group(1))
    elapsed = report["duration_us"] / 1e6
    ok = report["requests"] - report["non_2xx"]
    return {
        "connections": connections,
        "seconds": round(elapsed, 1),
        "decisions": int(ok),
        "non_2xx": int(report["non_2xx"]),
        "socket_errors": int(report["errors"]),
        "per_s": round(ok / elapsed, 1),
        "p50_ms": round(report["p50_us"] / 1000, 2),
        "p90_ms": round(report["p90_us"] / 1000, 2),
        "p99_ms": round(report["p99_us"] / 1000, 2),
        "max_ms": round(report["max_us"] / 1000, 2),
    }


def _serve(stack: Stack, issuers: str, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.environment(),
        "THREADLINE_AUTH_ISSUERS": issuers,
        "THREADLINE_CONSENT_WORKERS": str(workers),
        "THREADLINE_LOG_LEVEL": "WARNING",
        "THREADLINE_CONSENT_CHECKPOINT_DIR": str(stack.state_dir / "checkpoints"),
        "THREADLINE_CONSENT_CHECKPOINT_KEY_FILE": str(stack.state_dir / "checkpoint-key.pem"),
        "THREADLINE_CONSENT_AGREEMENTS_FILE": str(REPO_ROOT / "config/consent/agreements.toml"),
        "THREADLINE_CONSENT_RETENTION_FILE": str(REPO_ROOT / "config/consent/retention.toml"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    log = (stack.log_dir / "consent.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.local.cli", "serve", "consent"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _ready(url: str, wait_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + wait_seconds
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/healthz", timeout=2.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the consent service did not start at {url}")


class _Connection:
    """One keep-alive HTTP/1.1 connection, spoken directly over asyncio streams.

    The open-loop client must cost far less than what it measures. httpx spends about a
    millisecond of CPU a request in this process, on the same two cores as the service, and
    at 50 decisions/s that alone added several milliseconds to a 3 ms decision (wrk, one
    connection, closed loop: p50 3.0 ms; httpx, 50/s: p50 8 to 10 ms). This writes a prepared
    request and reads the status line, the headers and ``Content-Length`` bytes: tens of
    microseconds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def _open_loop(
    url: str, token: str, bodies: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    """Decisions at a fixed rate, each timed from when it was due to be sent (so a slow answer
    cannot hide the ones queued behind it: no coordinated omission), over keep-alive
    connections opened as needed (:class:`_Connection`)."""
    host, _, port = url.removeprefix("http://").partition(":")
    requests = []
    for body in bodies:
        data = body.encode()
        requests.append(
            (
                f"POST /v1/disclosures/decide HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data
        )
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    latencies: list[float] = []
    failed: dict[str, int] = {}

    async def one(raw: bytes, due: float) -> None:
        connection = idle.pop() if idle else None
        try:
            if connection is None:
                connection = await _Connection.open(host, int(port))
                opened.append(connection)
            status = await connection.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            failed[type(error).__name__] = failed.get(type(error).__name__, 0) + 1
            return
        if status == 200:
            latencies.append(time.perf_counter() - due)
        else:
            failed[str(status)] = failed.get(str(status), 0) + 1
        idle.append(connection)

    # Warm the pool, so the first decisions do not pay for connecting.
    for _ in range(4):
        idle.append(await _Connection.open(host, int(port)))
    opened.extend(idle)
    tasks = []
    started = time.perf_counter()
    total = int(rate * seconds)
    try:
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(requests[n % len(requests)], due)))
        await asyncio.gather(*tasks)
    finally:
        for connection in opened:
            connection.close()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def at(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "offered_per_s": rate,
        "seconds": round(elapsed, 1),
        "decisions": len(latencies),
        "failures": sum(failed.values()),
        "failures_by": failed,
        "connections": len(opened),
        "client": "asyncio streams, keep-alive HTTP/1.1 (bench/consent.py _Connection)",
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


async def http_decide(
    stack: Stack, subjects: list[uuid.UUID], *, quick: bool, work_dir: Path
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("bench consent needs wrk: apt-get install -y wrk (make bench does it)")
    token, issuers = _token_and_issuer()
    bodies = [json.dumps(request_body(subjects[n * 97 % len(subjects)])) for n in range(500)]
    script = work_dir / "decide.lua"
    script.write_text(
        WRK_SCRIPT
        % {"bodies": ",\n".join(f"[==[{body}]==]" for body in bodies), "auth": f"Bearer {token}"}
    )
    url = stack.url("consent")
    service = _serve(stack, issuers, workers=2)
    try:
        await _ready(url)
        async with httpx.AsyncClient(timeout=10) as client:
            check = await client.post(
                f"{url}/v1/disclosures/decide",
                content=bodies[0],
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        if check.status_code != 200:
            raise RuntimeError(f"decide answered {check.status_code}: {check.text}")
        seconds = 8.0 if quick else 20.0
        _wrk(wrk, script, url, 4, 3.0, work_dir / "wrk-warmup.txt")
        paced = await _open_loop(url, token, bodies, RATE, seconds)
        moderate = _wrk(wrk, script, url, 8, seconds, work_dir / "wrk-moderate.txt")
        saturated = _wrk(wrk, script, url, 64, seconds, work_dir / "wrk-saturated.txt")
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
    return {"paced": paced, "moderate": moderate, "saturated": saturated, "workers": 2}


async def _ledger_head(url: str) -> tuple[int, list[uuid.UUID]]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        head = int(
            await connection.fetchval("SELECT coalesce(max(sequence), 0) FROM consent.ledger")
        )
        rows = await connection.fetch(
            "SELECT subject_ids[1] AS subject FROM consent.ledger ORDER BY sequence LIMIT 5000"
        )
    finally:
        await connection.close()
    return head, [row["subject"] for row in rows]


async def _settle(url: str) -> float:
    """Vacuum the ledger and checkpoint before measuring, as a service in steady state would
    have been: autovacuum's first pass over a freshly loaded (or much appended) ledger reads all
    of its 19 GB and, setting pages all-visible, writes gigabytes of WAL that force a checkpoint.
    Left to run during the measurements, it was restarted by every run (each stops PostgreSQL)
    and never finished, and it took the two cores and the disk from the decisions (paced p99
    48 ms and a checkpoint in the middle of the saturated run, 23 November). Steady-state
    vacuums skip the pages already all-visible."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE) consent.ledger")
        await connection.execute("VACUUM (ANALYZE) consent.consent_records")
        await connection.execute("CHECKPOINT")
        return round(time.perf_counter() - started, 1)
    finally:
        await connection.close()


async def _run(quick: bool) -> dict[str, Any]:
    count = QUICK_ENTRIES if quick else ENTRIES
    stack = _stack()
    previous = RESULTS_FILE.exists() and json.loads(RESULTS_FILE.read_text())
    if not REUSE:
        stack.wipe()
    stack.start_infrastructure()
    work_dir = stack.state_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        url = stack.database_url
        await asyncio.to_thread(upgrade, "consent", url)
        await ensure_topics(stack.kafka.bootstrap_servers)
        head, _ = await _ledger_head(url)
        if REUSE and head >= count and previous:
            print(f"bench consent: reusing the ledger of {head:,} entries", flush=True)
            load = previous["load"]
        else:
            subjects = [uuid.uuid4() for _ in range(min(SUBJECT_POOL, count))]
            print(f"bench consent: loading {count:,} ledger entries …", flush=True)
            load = await bulk_load(url, count, subjects)
        head, subjects = await _ledger_head(url)
        print("bench consent: vacuum and checkpoint before measuring …", flush=True)
        settle_s = await _settle(url)
        print(f"bench consent: settled in {settle_s} s", flush=True)
        verify_span = min(1_000_000, head)
        verify_s, verified, intact = await verify_range(url, head - verify_span)
        if not intact or verified != verify_span:
            raise RuntimeError(f"the loaded chain does not verify ({verified} entries checked)")
        verify_1m_s = verify_s * (1_000_000 / verify_span)
        print(f"bench consent: verified {verified:,} entries in {verify_s:.1f} s", flush=True)
        appends = await in_process_appends(url, 5.0 if quick else 15.0, 256)
        print(f"bench consent: in-process appends {appends['per_s']}/s", flush=True)
        http = await http_decide(stack, subjects, quick=quick, work_dir=work_dir)
        print(f"bench consent: HTTP decide {http['saturated']['per_s']}/s", flush=True)
        after_s, appended, appended_intact = await verify_range(url, head)
        if not appended_intact:
            raise RuntimeError("the entries appended under load do not verify")
    finally:
        stack.stop_infrastructure()
    paced, moderate, saturated = http["paced"], http["moderate"], http["saturated"]
    result: dict[str, Any] = {
        "ledger_entries": head,
        "decide_p50_ms": paced["p50_ms"],
        "decide_p99_ms": paced["p99_ms"],
        "decisions_per_s": saturated["per_s"],
        "verify_1m_s": round(verify_1m_s, 2),
        "ledger_appends_per_s": appends["per_s"],
        "targets": {"decide_p99_ms": 10, "decisions_per_s": 2000, "verify_1m_s": 30},
        "load": load,
        "vacuum_and_checkpoint_s": settle_s,
        "verify": {"entries": verified, "seconds": round(verify_s, 2)},
        "in_process": appends,
        "http": http,
        "appended_under_load": {"entries": appended, "verified_s": round(after_s, 2)},
        "notes": (
            f"decide_p50_ms/decide_p99_ms: open loop at {RATE:g} decisions/s offered, timed from "
            "when each was due. decisions_per_s: wrk, 64 connections, closed loop. The service "
            "runs two uvicorn workers, each with its own group-commit writer, on the same "
            "2-core machine as PostgreSQL (fsync on), Kafka and the load generator. "
            "ledger_appends_per_s: the group-commit writer alone, in-process, 256 concurrent "
            "decisions, no HTTP. Before measuring, the ledger is vacuumed and checkpointed "
            "(vacuum_and_checkpoint_s), as autovacuum would have left it in steady state."
        ),
    }
    result["table"] = {
        "ledger entries": (head, "entries"),
        f"decide p50 ({RATE:g}/s offered)": (paced["p50_ms"], "ms"),
        f"decide p99 ({RATE:g}/s offered)": (paced["p99_ms"], "ms  (target ≤ 10)"),
        "decide p50 / p99 (wrk, 8 connections)": (
            f"{moderate['p50_ms']} / {moderate['p99_ms']}",
            "ms",
        ),
        "decisions/s (HTTP, wrk, 64 connections)": (saturated["per_s"], "/s  (target ≥ 2,000)"),
        "decide p99 at saturation": (saturated["p99_ms"], "ms"),
        "ledger appends/s (writer, no HTTP)": (appends["per_s"], "/s"),
        "mean decisions per commit (writer)": (appends["mean_batch"], ""),
        "verify 1M entries": (round(verify_1m_s, 2), "s  (target ≤ 30)"),
        "bulk load (COPY + chain)": (load["load_s"], "s"),
    }
    return result


def run(*, quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_run(quick))
