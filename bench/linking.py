"""Linking: accuracy on 100,000 generated records (pairwise precision, recall and F1 against the
ground truth, overall and per difficulty, and the scored pairs' precision-recall curve), Splink
(DuckDB) on the same file for comparison, the batch ``link-file`` on 1,000,000 records, and
online resolve latency with those 1,000,000 person records held in PostgreSQL (in process and
over HTTP), with peak memory of each.

Run it under the machine's benchmark lock (other engineers share the two cores)::

    flock /tmp/threadline-bench.lock .venv/bin/python -m bench --only linking

Its stack (PostgreSQL only) lives under ``var/bench-linking`` on ports from 24430
(``THREADLINE_BENCH_LINKING_PORT_BASE``).
"""

from __future__ import annotations

import asyncio
import csv
import gc
import http.client
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.ingest import code_version
from deploy.local.stack import REPO_ROOT, Stack
from services.linking import service
from services.linking.matching import batch, blocking, evaluation, moves
from services.linking.matching.model import Band, LinkageModel
from services.linking.matching.records import FEATURE_COLUMNS, Prepared, features, prepare
from services.linking.repository import LinkingRepository
from services.linking.synthetic import GeneratedRecord, generate, write_csv
from shared.db import Database, asyncpg_dsn
from shared.migrations import upgrade
from shared.service import SERVING_GC_YOUNG_THRESHOLD

BASE = int(os.environ.get("THREADLINE_BENCH_LINKING_PORT_BASE", 24430))
RESULTS = Path(__file__).parent / "results"
ACCURACY_SEED = 1  # the shipped model was trained on seed 424242: never evaluate on it
SPEED_SEED = 7


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": round(at(0.50), 3),
        "p95": round(at(0.95), 3),
        "p99": round(at(0.99), 3),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(statistics.fmean(ordered) * 1000, 3),
    }


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


# Accuracy ------------------------------------------------------------------------------------


def _difficulties(records: Sequence[GeneratedRecord], prepared: Sequence[Prepared]):  # type: ignore[no-untyped-def]
    def of(i: int, j: int) -> set[str]:
        a, b = prepared[i], prepared[j]
        tags = records[i].tags | records[j].tags
        found = set()
        shared_identifier = (a.nhs and a.nhs == b.nhs) or (a.upn and a.upn == b.upn)
        found.add("identifier_present" if shared_identifier else "identifier_absent")
        if ("old_address" in records[i].tags) != ("old_address" in records[j].tags):
            found.add("moved")
        if "nickname" in tags:
            found.add("nickname")
        if "name_change" in tags and a.family != b.family:
            found.add("name_change")
        if "unborn" in tags:
            found.add("unborn")
        return found

    return of


def accuracy(model: LinkageModel, records_count: int) -> dict[str, Any]:
    partnership = generate(records_count, seed=ACCURACY_SEED)
    records = partnership.records
    prepared = [prepare(g.record) for g in records]
    truth = [g.person_id for g in records]
    started = time.perf_counter()
    edges, best = batch.score_with_moves(prepared, model)
    labels, _ = batch.cluster(prepared, edges, best, model.known_given)
    seconds = time.perf_counter() - started
    overall = evaluation.pairwise(truth, labels)
    per = evaluation.by_difficulty(truth, labels, _difficulties(records, prepared))
    # What the review queue adds if a person decides each of its pairs correctly.
    review = [e for e in edges if e.band is Band.REVIEW]
    correct_reviews = [e for e in review if truth[e.left] == truth[e.right]]
    with_review = _with_accepted(prepared, edges, best, model, correct_reviews)
    oracle = evaluation.pairwise(truth, with_review)
    return {
        "records": len(records),
        "persons": len(set(truth)),
        "seconds": round(seconds, 2),
        "overall": overall.as_dict(),
        "per_difficulty": {name: scores.as_dict() for name, scores in per.items()},
        "review_pairs": len(review),
        "review_pairs_true_matches": len(correct_reviews),
        "with_review_decided": oracle.as_dict(),
        "link_threshold": model.thresholds.link,
        "review_threshold": model.thresholds.review,
        "code": code_version(),
    }


CURVE_THRESHOLDS = (
    0.01,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
    0.995,
    0.999,
    0.9999,
)


def precision_recall_curve(model: LinkageModel, records_count: int) -> dict[str, Any]:
    """Pairwise precision and recall of the scored pairs at each match-probability threshold,
    on the accuracy records. Recall counts every true pair, so pairs that blocking never put
    side by side are misses at every threshold. Pairs, not clusters: the clustered operating
    points (auto-link, review decided) are ``accuracy.overall`` and ``with_review_decided``."""
    records = generate(records_count, seed=ACCURACY_SEED).records
    prepared = [prepare(g.record) for g in records]
    truth = [g.person_id for g in records]
    edges, _ = batch.score_with_moves(prepared, model)
    true_pairs = evaluation.pairwise(truth, truth).true_pairs
    scored = sorted(
        ((1.0 if e.deterministic else e.probability), truth[e.left] == truth[e.right])
        for e in edges
    )
    points = []
    for threshold in CURVE_THRESHOLDS:
        above = [same for probability, same in scored if probability >= threshold]
        correct = sum(above)
        points.append(
            {
                "threshold": threshold,
                "pairs": len(above),
                "correct_pairs": correct,
                "precision": round(correct / len(above), 6) if above else 1.0,
                "recall": round(correct / true_pairs, 6),
            }
        )
    return {
        "records": len(records),
        "true_pairs": true_pairs,
        "scored_pairs": len(scored),
        "scored_true_pairs": sum(same for _, same in scored),
        "what": "scored pairs (deterministic identifier links count as probability 1) at or "
        "above each threshold, against every true pair",
        "points": points,
        "measured_at": datetime.now(UTC).isoformat(),
    }


def _with_accepted(
    prepared: Sequence[Prepared],
    edges: Sequence[batch.Edge],
    best: Sequence[float],
    model: LinkageModel,
    accepted: Sequence[batch.Edge],
) -> list[int]:
    decided = {(e.left, e.right) for e in accepted}
    promoted = [
        batch.Edge(e.left, e.right, 1.0, Band.LINK, True) if (e.left, e.right) in decided else e
        for e in edges
    ]
    labels, _ = batch.cluster(prepared, promoted, best, model.known_given)
    return labels


# Splink ----------------------------------------------------------------------------------


def splink_run(csv_path: Path, truth: dict[str, str], threshold: float) -> dict[str, Any]:
    """Splink 5 on DuckDB with comparable comparisons, trained the way its docs recommend."""
    try:
        import duckdb
        import splink.comparison_library as cl
        from splink import DuckDBAPI, Linker, SettingsCreator, block_on
    except ImportError as error:  # the bench extra is not installed
        return {"skipped": f"splink not installed ({error}); `make bench` installs it"}
    started = time.perf_counter()
    connection = duckdb.connect()

    def cleaned(column: str) -> str:
        return f"nullif(upper(trim({column})), '') AS {column}"

    connection.execute(
        f"""
        CREATE TABLE records AS
        SELECT record_id,
               nullif(split_part(upper(trim(given_name)), ' ', 1), '') AS given_name,
               {cleaned("family_name")}, {cleaned("date_of_birth")}, {cleaned("sex")},
               {cleaned("postcode")},
               nullif(replace(trim(nhs_number), ' ', ''), '') AS nhs_number,
               {cleaned("upn")}
        FROM read_csv('{csv_path}', all_varchar = true, header = true)
        """
    )
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("family_name").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("sex"),
            cl.ExactMatch("nhs_number"),
            cl.ExactMatch("upn"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("nhs_number"),
            block_on("upn"),
            block_on("date_of_birth"),
            block_on("given_name", "family_name"),
            block_on("family_name", "postcode"),
            block_on("postcode", "substr(given_name, 1, 1)"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI(connection=connection)
    linker = Linker(db_api.table_to_splink_dataframe("records", "records"), settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("nhs_number"), block_on("upn")], recall=0.6
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("given_name", "family_name")
    )
    predictions = linker.inference.predict(threshold_match_probability=0.01)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    rows = clusters.as_record_list()
    seconds = time.perf_counter() - started
    assigned = {row["record_id"]: row["cluster_id"] for row in rows}
    ids = list(truth)
    scores = evaluation.pairwise([truth[i] for i in ids], [assigned.get(i, i) for i in ids])
    return {"seconds": round(seconds, 2), "threshold": threshold, **scores.as_dict()}


# Batch ------------------------------------------------------------------------------------


def batch_file(records: Sequence[GeneratedRecord], workdir: Path) -> dict[str, Any]:
    source, target = workdir / "batch-in.csv", workdir / "batch-out.csv"
    write_csv(records, source)
    started = time.perf_counter()
    process = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "threadline"), "link-file", str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"link-file failed: {process.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with target.open(newline="") as file:
        assigned = {row["record_id"]: row["person_id"] for row in csv.DictReader(file)}
    truth = [g.person_id for g in records]
    scores = evaluation.pairwise(truth, [assigned[g.record.record_id] for g in records])
    return {
        "records": len(records),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "accuracy": scores.as_dict(),
        "progress": process.stderr.splitlines()[-4:],
        "measured_at": datetime.now(UTC).isoformat(),
        "code": code_version(),
    }


# Online resolve ---------------------------------------------------------------------------


#: PostgreSQL's buffer cache for the resolve runs: room for the whole linking schema (1.7 GB
#: at 1,000,000 person records), as a serving linking database would be given. With the
#: default 128 MB, most candidate rows are copied in from the operating system's cache on each
#: resolve: in-process p99 25.2 ms against 12.9 ms with the schema held (23 November 2026).
SHARED_BUFFERS = os.environ.get("THREADLINE_BENCH_LINKING_SHARED_BUFFERS", "3GB")


def _stack() -> Stack:
    stack = Stack.isolated("bench-linking", base_port=BASE, durable=False)
    stack.postgres_settings["shared_buffers"] = SHARED_BUFFERS
    return stack


async def _prewarm(url: str) -> dict[str, Any]:
    """Read the linking schema into PostgreSQL's buffer cache (``pg_prewarm``), as a linking
    database that has served for a while holds it, rather than time its first reads."""
    started = time.perf_counter()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        blocks = await connection.fetchval(
            "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c "
            "WHERE c.relnamespace = 'linking'::regnamespace AND c.relkind IN ('r', 'i', 't')"
        )
        size = await connection.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "WHERE c.relnamespace = 'linking'::regnamespace AND c.relkind = 'r'"
        )
        buffers = await connection.fetchval("SHOW shared_buffers")
    finally:
        await connection.close()
    return {
        "shared_buffers": buffers,
        "linking_schema_mb": round(int(size) / 2**20),
        "prewarmed_mb": round(int(blocks) * 8192 / 2**20),
        "prewarm_seconds": round(time.perf_counter() - started, 1),
    }


async def _load(
    url: str, records: Sequence[GeneratedRecord], labels: Sequence[int]
) -> dict[str, Any]:
    """Hold the records as persons (one per batch cluster) with their blocking keys."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    person_of: dict[int, uuid.UUID] = {}
    for label in labels:
        person_of.setdefault(label, uuid.uuid4())
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "TRUNCATE linking.record_keys, linking.person_records, linking.persons CASCADE"
        )
        await connection.copy_records_to_table(
            "persons",
            schema_name="linking",
            columns=["id", "status", "created_at", "updated_at"],
            records=[(pid, "active", now, now) for pid in person_of.values()],
        )
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[str, uuid.UUID]] = []
        for generated, label in zip(records, labels, strict=True):
            record = generated.record
            ready = prepare(record)
            record_id = uuid.uuid4()
            stored = features(ready)
            rows.append(
                (
                    record_id,
                    "bench",
                    "bench",
                    "bench",
                    "BENCH",
                    "child",
                    record.given_names,
                    record.family_name,
                    json.dumps(list(record.other_names)),
                    record.date_of_birth,
                    record.dob_estimated,
                    record.expected_date,
                    record.sex,
                    record.address,
                    ready.postcode or None,
                    ready.nhs,
                    ready.upn,
                    *stored.values(),
                    person_of[label],
                    "batch",
                    1.0,
                    "[]",
                    "bench",
                    now,
                    now,
                )
            )
            keys.extend((key, record_id) for key in blocking.keys(ready))
            keys.extend((moves.home_key(home), record_id) for home in ready.homes)
        await connection.execute("SET synchronous_commit = off")
        await connection.copy_records_to_table(
            "person_records",
            schema_name="linking",
            columns=[
                "id",
                "source_type",
                "source_reference",
                "source_agency",
                "source_organisation",
                "role",
                "given_names",
                "family_name",
                "other_names",
                "date_of_birth",
                "dob_estimated",
                "expected_date",
                "sex",
                "address",
                "postcode",
                "nhs_number",
                "upn",
                *FEATURE_COLUMNS,
                "person_id",
                "link_method",
                "match_probability",
                "link_evidence",
                "linked_by",
                "linked_at",
                "recorded_at",
            ],
            records=rows,
        )
        await connection.copy_records_to_table(
            "record_keys", schema_name="linking", columns=["key", "record_id"], records=keys
        )
        # As autovacuum would leave tables that have settled: their statistics gathered and
        # their visibility maps set, so the index-only scans of record_keys visit no heap.
        await connection.execute("VACUUM (ANALYZE) linking.persons")
        await connection.execute("VACUUM (ANALYZE) linking.person_records")
        await connection.execute("VACUUM (ANALYZE) linking.record_keys")
        # ... and their pages written out, so that the timed resolves do not share the disk
        # with the load's writes.
        await connection.execute("CHECKPOINT")
        await asyncio.to_thread(os.sync)
    finally:
        await connection.close()
    return {
        "person_records": len(rows),
        "persons": len(person_of),
        "blocking_keys": len(keys),
        "load_seconds": round(time.perf_counter() - started, 1),
    }


async def _resolve_in_process(
    url: str, model: LinkageModel, queries: Sequence[GeneratedRecord]
) -> dict[str, Any]:
    database = Database(url, pool_size=2)
    samples: list[float] = []
    bands: dict[str, int] = defaultdict(int)
    candidates: list[int] = []
    records: list[int] = []  # candidate records (rows) each resolve scored
    fetches: list[float] = []  # the candidate query alone, timed again after the resolve
    try:
        for warm in queries[:50]:
            async with database.transaction() as session:
                await service.resolve(session, model, warm.record, 400)
        for query in queries:
            started = time.perf_counter()
            async with database.transaction() as session:
                _, _, resolution = await service.resolve(session, model, query.record, 400)
            samples.append(time.perf_counter() - started)
            bands[resolution.band.value] += 1
            candidates.append(len(resolution.candidates))
            async with database.transaction() as session:
                keys = blocking.query_keys(prepare(query.record))
                started = time.perf_counter()
                rows = await LinkingRepository(session).candidate_rows(keys, 400)
                fetches.append(time.perf_counter() - started)
            records.append(len(rows))
    finally:
        await database.dispose()
    slowest = sorted(range(len(samples)), key=samples.__getitem__)[-max(1, len(samples) // 100) :]
    return {
        "queries": len(samples),
        "latency_ms": _percentiles(samples),
        "bands": dict(bands),
        "candidate_persons_mean": round(statistics.fmean(candidates), 1),
        "candidate_records": {
            "p50": statistics.median(records),
            "p99": sorted(records)[int(len(records) * 0.99) - 1],
            "max": max(records),
            "mean_of_the_slowest_1pct": round(statistics.fmean(records[i] for i in slowest), 1),
        },
        "candidate_query_ms": _percentiles(fetches),
        "rss_mb": _rss_mb(),
    }


def _resolve_over_http(
    stack: Stack, queries: Sequence[GeneratedRecord], port: int
) -> dict[str, Any]:
    import httpx
    from joserfc import jwt
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True, auto_kid=True)
    issuer = "https://issuer.bench.threadline"
    environment = {
        **os.environ,
        "THREADLINE_ENVIRONMENT": "development",
        "THREADLINE_DATABASE_URL": stack.database_url,
        "THREADLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # no Kafka: resolve needs none
        "THREADLINE_LINKING_PORT": str(port),
        "THREADLINE_CONSUMERS_ENABLED": "false",
        "THREADLINE_RELAY_ENABLED": "false",
        "THREADLINE_LOG_LEVEL": "WARNING",
        "THREADLINE_AUTH_ISSUERS": json.dumps(
            [{"issuer": issuer, "jwks": {"keys": [key.as_dict(private=False)]}}]
        ),
    }
    now = int(time.time())
    token = jwt.encode(
        {"alg": "Ed25519", "kid": key.kid},
        {
            "iss": issuer,
            "sub": "bench",
            "aud": "threadline:linking",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "scope": "mash:triage",
            "org": "BENCH",
            "agency": "mash",
        },
        key,
        algorithms=["Ed25519"],
    )
    server = subprocess.Popen(
        [str(REPO_ROOT / ".venv" / "bin" / "threadline"), "serve", "linking"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[float] = []
    peak = 0.0
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
        # The timed requests go over one kept-alive connection of the standard library's
        # http.client: httpx's own work was 1.7-3.4 ms of client CPU a request on this machine
        # (docs/architecture.md), which is the bench's cost, not the service's.
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        bodies = [json.dumps(_body(q)).encode() for q in queries]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        timings: dict[str, list[float]] = defaultdict(list)  # the answers' Server-Timing

        def post(body: bytes) -> tuple[int, bytes]:
            connection.request("POST", "/v1/persons/resolve", body=body, headers=headers)
            response = connection.getresponse()
            for part in (response.getheader("Server-Timing") or "").split(", "):
                if ";dur=" in part:
                    name, value = part.split(";dur=")
                    timings[name].append(float(value) / 1000)
            return response.status, response.read()

        try:
            for body in bodies[:50]:
                post(body)
            timings.clear()
            for body in bodies:
                started = time.perf_counter()
                status, answer = post(body)
                samples.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"resolve answered {status}: {answer[:500]!r}")
        finally:
            connection.close()
        peak = psutil.Process(server.pid).memory_info().rss / 2**20
    finally:
        server.terminate()
        server.wait(timeout=20)
    return {
        "queries": len(samples),
        "latency_ms": _percentiles(samples),
        # The server's own timing of each step, from its Server-Timing
        # header: what the HTTP request, the token and the commit add is the rest.
        "server_timing_ms": {name: _percentiles(values) for name, values in timings.items()},
        "server_rss_mb": peak,
    }


def _body(generated: GeneratedRecord) -> dict[str, Any]:
    record = generated.record
    ready = prepare(record)
    body: dict[str, Any] = {
        "given_names": record.given_names or None,
        "family_name": record.family_name or None,
        "other_names": list(record.other_names),
        "date_of_birth": record.date_of_birth.isoformat() if record.date_of_birth else None,
        "date_of_birth_estimated": record.dob_estimated,
        "unborn_expected_date": (
            record.expected_date.isoformat() if record.expected_date else None
        ),
        "address": record.address,
        "postcode": ready.postcode or None,
        "nhs_number": ready.nhs,
        "upn": ready.upn,
    }
    if record.sex in {"male", "female"}:
        body["sex"] = record.sex
    return {key: value for key, value in body.items() if value not in (None, [])}


def _summarise(result: dict[str, Any], accuracy_records: int, batch_records: int) -> dict[str, Any]:
    """The headline keys and the printed table, from the measurements in ``result``."""
    overall = result["accuracy"]["overall"]
    splink = result["splink"]
    result.update(
        records=accuracy_records,
        f1=overall["f1"],
        precision_at_autolink=overall["precision"],
        recall_at_autolink=overall["recall"],
        resolve_p99_ms=result["resolve_in_process"]["latency_ms"]["p99"],
        resolve_http_p99_ms=result["resolve_http"]["latency_ms"]["p99"],
        persons_held=result["held"]["person_records"],
        batch_1m_s=result["batch"]["seconds"],
        splink_f1=splink.get("f1"),
        splink_s=splink.get("seconds"),
    )
    result["table"] = {
        "accuracy records": (accuracy_records, "records"),
        "F1 (auto-link only)": (overall["f1"], ""),
        "precision at auto-link": (overall["precision"], ""),
        "recall at auto-link": (overall["recall"], ""),
        "F1 if the review queue is decided right": (
            result["accuracy"]["with_review_decided"]["f1"],
            "",
        ),
        "review pairs": (result["accuracy"]["review_pairs"], "pairs"),
        "our batch time (accuracy run)": (result["accuracy"]["seconds"], "s"),
        "Splink F1": (splink.get("f1", "-"), ""),
        "Splink time": (splink.get("seconds", "-"), "s"),
        "person records held": (result["held"]["person_records"], "records"),
        "persons held": (result["held"]["persons"], "persons"),
        "resolve p50 in process": (result["resolve_in_process"]["latency_ms"]["p50"], "ms"),
        "resolve p99 in process": (result["resolve_in_process"]["latency_ms"]["p99"], "ms"),
        "resolve p50 over HTTP": (result["resolve_http"]["latency_ms"]["p50"], "ms"),
        "resolve p99 over HTTP": (result["resolve_http"]["latency_ms"]["p99"], "ms"),
        "resolve server peak RSS": (round(result["resolve_http"]["server_rss_mb"]), "MB"),
        f"link-file {batch_records:,} records": (result["batch"]["seconds"], "s"),
        "link-file peak RSS": (result["batch"]["peak_rss_mb"], "MB"),
        "link-file F1": (result["batch"]["accuracy"]["f1"], ""),
    }
    return result


# The run ----------------------------------------------------------------------------------


def run(*, quick: bool = False) -> dict[str, Any]:
    """Everything; with THREADLINE_BENCH_LINKING_ONLY=resolve, only the resolve measurements,
    merged into the existing bench/results/linking.json (the rest of it is kept); with
    THREADLINE_BENCH_LINKING_ONLY=curve, only the precision-recall curve, with
    THREADLINE_BENCH_LINKING_ONLY=accuracy, the accuracy and the curve, and with
    THREADLINE_BENCH_LINKING_ONLY=batch, only the link-file run, merged the same way."""
    model = LinkageModel.load()
    accuracy_records = 20_000 if quick else 100_000
    batch_records = 100_000 if quick else 1_000_000
    queries_count = 300 if quick else 2_000
    only = os.environ.get("THREADLINE_BENCH_LINKING_ONLY")
    only_resolve = only == "resolve"
    result: dict[str, Any] = {}
    previous = RESULTS / "linking.json"
    if only == "batch":
        result = json.loads(previous.read_text())
        print(f"linking: generating {batch_records:,} + {queries_count:,} records …", flush=True)
        held = generate(batch_records + queries_count, seed=SPEED_SEED).records[:batch_records]
        print(f"linking: link-file on {batch_records:,} records …", flush=True)
        with tempfile.TemporaryDirectory(prefix="threadline-linking-") as work:
            result["batch"] = batch_file(held, Path(work))
        return _summarise(result, accuracy_records, batch_records)
    if only in ("curve", "accuracy"):
        result = json.loads(previous.read_text())
        if only == "accuracy":
            print(f"linking: accuracy on {accuracy_records:,} records …", flush=True)
            result["accuracy"] = accuracy(model, accuracy_records)
        print(f"linking: precision-recall curve on {accuracy_records:,} records …", flush=True)
        result["precision_recall_curve"] = precision_recall_curve(model, accuracy_records)
        return _summarise(result, accuracy_records, batch_records)
    if only_resolve:
        result = json.loads(previous.read_text())
        result.pop("table", None)
    with tempfile.TemporaryDirectory(prefix="threadline-linking-") as work:
        workdir = Path(work)
        if not only_resolve:
            print(f"linking: accuracy on {accuracy_records:,} records …", flush=True)
            result["accuracy"] = accuracy(model, accuracy_records)
            print("linking: precision-recall curve …", flush=True)
            result["precision_recall_curve"] = precision_recall_curve(model, accuracy_records)
            eval_csv = workdir / "accuracy.csv"
            partnership = generate(accuracy_records, seed=ACCURACY_SEED)
            write_csv(partnership.records, eval_csv)
            print("linking: Splink on the same file …", flush=True)
            truth = {g.record.record_id: g.person_id for g in partnership.records}
            result["splink"] = splink_run(eval_csv, truth, model.thresholds.link)
            del partnership, truth
        print(f"linking: generating {batch_records:,} + {queries_count:,} records …", flush=True)
        speed = generate(batch_records + queries_count, seed=SPEED_SEED).records
        held, queries = speed[:batch_records], speed[batch_records:]
        if not only_resolve:
            print(f"linking: link-file on {batch_records:,} records …", flush=True)
            result["batch"] = batch_file(held, workdir)
        labels = [g.person_id for g in held]  # persons held: as generated (the true persons)
        stack = _stack()
        postgres = stack.postgres
        postgres.wipe()
        try:
            if not postgres.initialised:
                postgres.initialise()
            postgres.start()
            postgres.ensure_database(stack.database)
            upgrade("linking", stack.database_url)
            print(f"linking: loading {batch_records:,} person records into PostgreSQL …")
            index = {person: i for i, person in enumerate(dict.fromkeys(labels))}
            loaded = asyncio.run(_load(stack.database_url, held, [index[p] for p in labels]))
            loaded["postgres"] = asyncio.run(_prewarm(stack.database_url))
            result["held"] = loaded
            # The million generated records are not the service's: drop them, and keep the
            # cyclic garbage collector from walking what is left on every pause; sweep the
            # youngest generation as seldom as a serving process does.
            del speed, held, labels, index
            gc.collect()
            gc.freeze()
            gc.set_threshold(SERVING_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            random.Random(3).shuffle(queries)
            print(f"linking: {queries_count:,} resolves in process …", flush=True)
            result["resolve_in_process"] = asyncio.run(
                _resolve_in_process(stack.database_url, model, queries)
            )
            print(f"linking: {queries_count:,} resolves over HTTP …", flush=True)
            result["resolve_http"] = _resolve_over_http(stack, queries, BASE + 20)
        finally:
            postgres.stop()
    return _summarise(result, accuracy_records, batch_records)


if __name__ == "__main__":
    output = run(quick="--quick" in sys.argv)
    print(json.dumps(output["table"], indent=1))
