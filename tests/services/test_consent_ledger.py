"""The ledger's tamper evidence: the service cannot change an entry; a superuser can, and verify
names the first entry that no longer holds (an edit, a deletion, a reordering, a rewrite of the
chain that only the signed checkpoints catch)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.consent import checkpoints, integrity
from services.consent.jobs import write_checkpoint
from services.consent.ledger import (
    canonical,
    document,
    entry_hash,
    plain,
    reference_canonical,
    subject_strings,
)
from services.consent.models import WRITER_ROLE
from shared.db import Database, asyncpg_dsn
from tests.services.consent_support import (
    SCHOOL_ASKS,
    consent_api,
    disclosure,
    superuser,
)


@pytest.fixture
async def api(
    database_url: str, bootstrap: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with consent_api(database_url, bootstrap, tmp_path) as client:
        yield client


async def decide_many(api: httpx.AsyncClient, count: int) -> list[dict]:
    answers = []
    for _ in range(count):
        response = await api.post("/v1/disclosures/decide", json=disclosure(), headers=SCHOOL_ASKS)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


async def verify(database_url: str, tmp_path: Path) -> integrity.IntegrityResult:
    key = checkpoints.load_public_key(tmp_path / "checkpoint-key.pem")
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await integrity.verify(connection, tmp_path / "checkpoints", key)
    finally:
        await connection.close()


async def test_decisions_form_one_dense_chain_that_verifies(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    answers = await decide_many(api, 3)
    sequences = [answer["ledger_sequence"] for answer in answers]
    assert sequences == list(range(sequences[0], sequences[0] + 3))
    async with superuser(database_url) as connection:
        rows = await connection.fetch(
            "SELECT sequence, prev_hash, hash FROM consent.ledger WHERE sequence = ANY($1)",
            sequences,
        )
    by_sequence = {row["sequence"]: row for row in rows}
    for earlier, later in itertools.pairwise(sequences):
        assert by_sequence[later]["prev_hash"] == by_sequence[earlier]["hash"]
    assert by_sequence[sequences[-1]]["hash"].hex() == answers[-1]["ledger_hash"]
    result = await verify(database_url, tmp_path)
    assert result.intact, result.first_broken
    assert result.chain.last_sequence >= sequences[-1]


async def test_text_that_copy_and_json_escape_verifies(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    """Quotes, backslashes, tabs, newlines and non-ASCII in an entry survive the verifier's
    COPY stream and JSON round trip."""
    body = disclosure(
        data_minimisation='Only "the concern"\tand\\attendance;\nnot Zoë\'s full record 😀',
    )
    response = await api.post("/v1/disclosures/decide", json=body, headers=SCHOOL_ASKS)
    assert response.status_code == 200, response.text
    result = await verify(database_url, tmp_path)
    assert result.intact, result.first_broken
    assert result.chain.last_sequence >= response.json()["ledger_sequence"]


def test_the_canonical_form_is_fixed() -> None:
    """The hash input is specified, not whatever json.dumps does today: a verifier in another
    language must be able to rebuild it byte for byte."""
    from datetime import UTC, datetime

    columns = {
        "sequence": 7,
        "entry_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "kind": "disclosure.decided",
        "recorded_at": datetime(2026, 11, 22, 9, 30, 1, 5, tzinfo=UTC),
        "subject_ids": [uuid.UUID("87654321-4321-8765-4321-876543218765")],
        "from_agency": "school",
        "to_agency": "mash",
        "purpose": "safeguarding_referral",
        "lawful_basis": "public_task",
        "outcome": "share",
        "consent_status": "not_sought",
        "payload": {"b": "é", "a": [1, True, None]},
        "prev_hash": bytes(32),
    }
    assert (
        canonical(document(**columns))
        == (
            '{"consent_status":"not_sought","entry_id":"12345678-1234-5678-1234-567812345678",'
            '"from_agency":"school","kind":"disclosure.decided","lawful_basis":"public_task",'
            '"outcome":"share","payload":{"a":[1,true,null],"b":"é"},"prev_hash":"'
            + "0"
            * 64
            + '","purpose":"safeguarding_referral","recorded_at":"2026-11-22T09:30:01.000005Z",'
            '"sequence":7,"subject_ids":["87654321-4321-8765-4321-876543218765"],'
            '"to_agency":"mash","v":1}'
        ).encode()
    )
    # subject ids in the form str() gives, whatever kind of UUID the driver or a parser made
    from asyncpg.pgproto import pgproto

    driver = pgproto.UUID(uuid.uuid4().bytes)  # asyncpg's own UUID type
    mixed = [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), driver, "already-text"]
    assert subject_strings(mixed) == [str(subject) for subject in mixed]
    awkward = {"b": 'é\u0001\n\t"\\/\u2028\x7f😀', "a": [2**62, -1, {"z": "\u001f\b"}]}
    assert canonical(awkward) == reference_canonical(awkward)
    with pytest.raises(TypeError):
        plain({"nested": [{"score": 0.5}]})


async def test_the_service_role_cannot_update_or_delete_ledger_rows(
    api: httpx.AsyncClient, database_url: str
) -> None:
    [answer] = await decide_many(api, 1)
    sequence = answer["ledger_sequence"]
    service_db = Database(database_url, role=WRITER_ROLE)
    try:
        for statement in (
            "UPDATE consent.ledger SET outcome = 'do_not_share' WHERE sequence = :s",
            "DELETE FROM consent.ledger WHERE sequence = :s",
            "TRUNCATE consent.ledger",
        ):
            with pytest.raises(DBAPIError, match="permission denied"):
                async with service_db.transaction() as session:
                    await session.execute(text(statement), {"s": sequence})
    finally:
        await service_db.dispose()
    # The owner (here the superuser, with triggers on) is stopped by the trigger.
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await connection.execute(
                "UPDATE consent.ledger SET outcome = 'x' WHERE sequence = $1", sequence
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await connection.execute("DELETE FROM consent.ledger WHERE sequence = $1", sequence)
    finally:
        await connection.close()


async def test_an_edited_entry_is_named(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    answers = await decide_many(api, 5)
    target = answers[2]["ledger_sequence"]
    async with superuser(database_url) as connection:
        original = await connection.fetchval(
            "SELECT lawful_basis FROM consent.ledger WHERE sequence = $1", target
        )
        await connection.execute(
            "UPDATE consent.ledger SET lawful_basis = 'consent' WHERE sequence = $1", target
        )
        try:
            result = await verify(database_url, tmp_path)
            assert not result.intact
            assert result.first_broken is not None
            assert result.first_broken[0] == target
            assert "altered" in result.first_broken[1]
        finally:
            await connection.execute(
                "UPDATE consent.ledger SET lawful_basis = $2 WHERE sequence = $1",
                target,
                original,
            )
    assert (await verify(database_url, tmp_path)).intact


async def test_a_deleted_entry_is_named(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    answers = await decide_many(api, 5)
    target = answers[1]["ledger_sequence"]
    async with superuser(database_url) as connection:
        row = await connection.fetchrow("SELECT * FROM consent.ledger WHERE sequence = $1", target)
        await connection.execute("DELETE FROM consent.ledger WHERE sequence = $1", target)
        try:
            result = await verify(database_url, tmp_path)
            assert result.first_broken is not None
            assert result.first_broken[0] == target
            assert f"entry {target} is missing" in result.first_broken[1]
        finally:
            columns = list(row.keys())
            await connection.execute(
                f"INSERT INTO consent.ledger ({', '.join(columns)}) VALUES "
                f"({', '.join(f'${n}' for n in range(1, len(columns) + 1))})",
                *[
                    json.dumps(row[c]) if c == "payload" and not isinstance(row[c], str) else row[c]
                    for c in columns
                ],
            )
    assert (await verify(database_url, tmp_path)).intact


async def test_two_reordered_entries_are_named(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    answers = await decide_many(api, 5)
    first, second = answers[2]["ledger_sequence"], answers[3]["ledger_sequence"]

    async def swap(connection: asyncpg.Connection) -> None:
        async with connection.transaction():
            await connection.execute(
                "UPDATE consent.ledger SET sequence = -1 WHERE sequence = $1", first
            )
            await connection.execute(
                "UPDATE consent.ledger SET sequence = $1 WHERE sequence = $2", first, second
            )
            await connection.execute(
                "UPDATE consent.ledger SET sequence = $1 WHERE sequence = -1", second
            )

    async with superuser(database_url) as connection:
        await swap(connection)
        try:
            result = await verify(database_url, tmp_path)
            assert result.first_broken is not None
            assert result.first_broken[0] == first
            assert "does not link" in result.first_broken[1]
        finally:
            await swap(connection)
    assert (await verify(database_url, tmp_path)).intact


async def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    """A superuser edits an entry and recomputes every later hash: the chain holds again, but
    the checkpoint signed before the edit does not match, and verify says so."""
    answers = await decide_many(api, 4)
    target = answers[1]["ledger_sequence"]
    database = Database(database_url)
    key = checkpoints.load_or_create_signing_key(tmp_path / "checkpoint-key.pem", create=True)
    from datetime import UTC, datetime

    async with database.transaction() as session:
        checkpoint = await write_checkpoint(
            session, key, tmp_path / "checkpoints", datetime.now(UTC)
        )
    await database.dispose()
    assert checkpoint is not None and checkpoint.sequence >= answers[-1]["ledger_sequence"]
    assert (await verify(database_url, tmp_path)).intact

    async with superuser(database_url) as connection:
        originals = await connection.fetch(
            "SELECT sequence, outcome, prev_hash, hash FROM consent.ledger "
            "WHERE sequence >= $1 ORDER BY sequence",
            target,
        )
        await rewrite(connection, target, outcome="do_not_share")
        try:
            result = await verify(database_url, tmp_path)
            assert result.chain.intact  # the chain alone no longer shows the edit
            assert result.first_broken is not None
            assert result.first_broken[0] == checkpoint.sequence
            assert "rewritten at or before it" in result.first_broken[1]
        finally:
            async with connection.transaction():
                for row in originals:
                    await connection.execute(
                        "UPDATE consent.ledger SET outcome = $2, prev_hash = $3, hash = $4 "
                        "WHERE sequence = $1",
                        row["sequence"],
                        row["outcome"],
                        row["prev_hash"],
                        row["hash"],
                    )
    assert (await verify(database_url, tmp_path)).intact


async def rewrite(connection: asyncpg.Connection, target: int, *, outcome: str) -> None:
    """Edit one entry and recompute the chain from it to the head, as a careful forger would."""
    async with connection.transaction():
        await connection.execute(
            "UPDATE consent.ledger SET outcome = $2 WHERE sequence = $1", target, outcome
        )
        previous = await connection.fetchval(
            "SELECT hash FROM consent.ledger WHERE sequence = $1", target - 1
        )
        rows = await connection.fetch(
            "SELECT sequence, entry_id, kind, recorded_at, subject_ids, from_agency, to_agency, "
            "purpose, lawful_basis, outcome, consent_status, payload::text AS payload "
            "FROM consent.ledger WHERE sequence >= $1 ORDER BY sequence",
            target,
        )
        for row in rows:
            columns = dict(row)
            columns["payload"] = json.loads(columns["payload"])
            new_hash = entry_hash(**columns, prev_hash=bytes(previous))
            await connection.execute(
                "UPDATE consent.ledger SET prev_hash = $2, hash = $3 WHERE sequence = $1",
                row["sequence"],
                bytes(previous),
                new_hash,
            )
            previous = new_hash


async def test_a_forged_checkpoint_is_refused(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    await decide_many(api, 1)
    from datetime import UTC, datetime

    forger = checkpoints.Ed25519PrivateKey.generate()
    checkpoints.load_or_create_signing_key(tmp_path / "checkpoint-key.pem", create=True)
    forged = checkpoints.sign(forger, sequence=1, hash_=bytes(32), now=datetime.now(UTC))
    checkpoints.write(tmp_path / "checkpoints", forged)
    result = await verify(database_url, tmp_path)
    assert not result.intact
    [problem] = result.checkpoint_problems
    assert problem.signature_valid is False
    assert "not signed by the trusted key" in (problem.problem or "")


async def test_threadline_ledger_verify_names_the_entry_and_fails(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path, worker_env: dict[str, str]
) -> None:
    answers = await decide_many(api, 3)
    target = answers[1]["ledger_sequence"]
    env = {
        **worker_env,
        "THREADLINE_CONSENT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "THREADLINE_CONSENT_CHECKPOINT_KEY_FILE": str(tmp_path / "checkpoint-key.pem"),
    }
    command = [sys.executable, "-m", "deploy.local.cli", "ledger"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    made = await asyncio.to_thread(run, "checkpoint")
    assert made.returncode == 0, made.stderr
    assert "checkpoint of entry" in made.stdout
    intact = await asyncio.to_thread(run, "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "ledger intact" in intact.stdout

    async with superuser(database_url) as connection:
        original = await connection.fetchval(
            "SELECT purpose FROM consent.ledger WHERE sequence = $1", target
        )
        await connection.execute(
            "UPDATE consent.ledger SET purpose = 'timeline_read' WHERE sequence = $1", target
        )
        try:
            broken = await asyncio.to_thread(run, "verify")
        finally:
            await connection.execute(
                "UPDATE consent.ledger SET purpose = $2 WHERE sequence = $1", target, original
            )
    assert broken.returncode == 1
    assert f"first entry that does not hold: {target}" in broken.stdout
    assert os.path.isdir(tmp_path / "checkpoints")


def test_a_row_the_verifier_cannot_read_is_a_break_not_a_crash() -> None:
    from services.consent.ledger import MalformedRow, parse_copy_row

    with pytest.raises(MalformedRow):
        parse_copy_row(b"1\tonly-two-columns")
    row = parse_copy_row(
        b"3\te\tk\t2026-01-01T00:00:00.000000Z\ta,b\t\\N\tmash\tp\tl\to\tc\t"
        b'{"x": "a\\\\"b"}\t' + b"00" * 32 + b"\t" + b"11" * 32
    )
    assert row[0] == 3 and row[4] == ["a", "b"] and row[5] is None
    assert row[11] == '{"x": "a\\"b"}'
    assert row[12] == bytes(32) and row[13] == bytes([0x11]) * 32
