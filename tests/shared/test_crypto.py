"""Encryption at rest on the real database: what is stored holds no plaintext and no usable key,
a ciphertext opens only for its own subject and context, destroying a key erases for good, and
master keys rotate without touching the ciphertexts."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, LargeBinary, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import create_async_engine

from shared.crypto import (
    DEV_KEYRING,
    DecryptionFailed,
    KeyDestroyed,
    MasterKeyring,
    UnknownMasterKey,
    Vault,
    attach_data_keys,
    create_data_key_table,
    refuse_dev_keyring_in_production,
    sealing_aad,
    wrapping_aad,
)
from shared.db import Database, service_metadata

SCHEMA = "crypto_test"
ROTATION_SCHEMA = "crypto_rotation_test"  # rewrap sweeps a whole table, so rotation has its own

metadata = service_metadata(SCHEMA)
data_keys = attach_data_keys(metadata)
narratives = Table(
    "narratives",
    metadata,
    Column("id", PG_UUID(as_uuid=True), primary_key=True),
    Column("subject_id", PG_UUID(as_uuid=True), nullable=False),
    Column("body", LargeBinary, nullable=False),
)
rotation_data_keys = attach_data_keys(service_metadata(ROTATION_SCHEMA))

KEYRING = MasterKeyring.from_setting(DEV_KEYRING)
NARRATIVE = (
    "Amélie (7) told her teacher that her mum's boyfriend shouts and locks her in her room. "
    "She said: “I'm scared to go home tonight.” "
) * 12  # about 1.6 KB


class ManualMonotonic:
    """A monotonic clock for the key cache that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module", autouse=True)
async def schemas(database_url: str) -> AsyncIterator[None]:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for schema in (SCHEMA, ROTATION_SCHEMA):
                await connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                await connection.run_sync(create_data_key_table, schema)
            await connection.run_sync(metadata.create_all, [narratives])
        yield
    finally:
        await engine.dispose()


@pytest.fixture
def vault() -> Vault:
    return Vault(KEYRING, data_keys)


def context_for(narrative_id: UUID) -> str:
    return f"crypto_test.narratives.body:{narrative_id}"


async def seal_and_store(
    database: Database, vault: Vault, subject_id: UUID, plaintext: str
) -> tuple[UUID, bytes]:
    narrative_id = uuid4()
    async with database.transaction() as session:
        sealed = await vault.seal(session, subject_id, plaintext, context=context_for(narrative_id))
        await session.execute(
            insert(narratives).values(id=narrative_id, subject_id=subject_id, body=sealed)
        )
    return narrative_id, sealed


async def open_in_new_transaction(
    database: Database, vault: Vault, subject_id: UUID, sealed: bytes, context: str
) -> str:
    async with database.transaction() as session:
        return await vault.open(session, subject_id, sealed, context=context)


async def test_a_sealed_text_opens_to_the_same_text(database: Database, vault: Vault) -> None:
    subject_id = uuid4()
    for plaintext in (NARRATIVE, "", "ok", "🙂 émoji and ünïcode"):
        narrative_id, sealed = await seal_and_store(database, vault, subject_id, plaintext)
        opened = await open_in_new_transaction(
            database, vault, subject_id, sealed, context_for(narrative_id)
        )
        assert opened == plaintext
    # Two seals of one text differ (fresh nonce), and both open.
    async with database.transaction() as session:
        first = await vault.seal(session, subject_id, "same", context="c")
        second = await vault.seal(session, subject_id, "same", context="c")
        assert first != second
        assert await vault.open(session, subject_id, second, context="c") == "same"


async def test_the_database_holds_no_plaintext_and_no_raw_data_key(
    database: Database, vault: Vault
) -> None:
    subject_id = uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, subject_id, NARRATIVE)

    async with database.transaction() as session:
        body, row_text = (
            await session.execute(
                text(
                    "SELECT body, n::text FROM crypto_test.narratives n WHERE id = :id"
                ).bindparams(id=narrative_id)
            )
        ).one()
        key_row = (
            await session.execute(select(data_keys).where(data_keys.c.subject_id == subject_id))
        ).one()
    assert bytes(body) == sealed
    for fragment in ("Amélie", "scared to go home", "boyfriend"):
        assert fragment.encode() not in body
        assert fragment not in row_text
    assert len(body) == 1 + 12 + len(NARRATIVE.encode()) + 16

    # The stored key row is only the wrapped key; the data key itself appears nowhere in it.
    assert key_row.master_key_id == KEYRING.current_id
    data_key = KEYRING.unwrap(key_row.master_key_id, key_row.wrapped_key, wrapping_aad(subject_id))
    assert len(data_key) == 32
    assert data_key not in key_row.wrapped_key
    assert data_key.hex() not in str(tuple(key_row))
    assert len(key_row.wrapped_key) == 1 + 12 + 32 + 16

    # The documented framing: version byte, nonce, ciphertext and tag, bound to context|subject.
    manual = AESGCM(data_key).decrypt(
        sealed[1:13], sealed[13:], sealing_aad(context_for(narrative_id), subject_id)
    )
    assert sealed[0] == 0x01
    assert manual.decode() == NARRATIVE


async def test_the_wrong_context_does_not_open(database: Database, vault: Vault) -> None:
    subject_id = uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, subject_id, NARRATIVE)
    for context in (context_for(uuid4()), "crypto_test.narratives.title:" + str(narrative_id)):
        with pytest.raises(DecryptionFailed):
            await open_in_new_transaction(database, vault, subject_id, sealed, context)


async def test_a_ciphertext_moved_to_another_subject_does_not_open(
    database: Database, vault: Vault
) -> None:
    owner, other = uuid4(), uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, owner, NARRATIVE)
    await seal_and_store(database, vault, other, "the other child's own narrative")
    with pytest.raises(DecryptionFailed):
        await open_in_new_transaction(database, vault, other, sealed, context_for(narrative_id))
    # A subject that never had a key cannot have a ciphertext either.
    with pytest.raises(DecryptionFailed):
        await open_in_new_transaction(database, vault, uuid4(), sealed, context_for(narrative_id))


async def test_a_wrapped_key_copied_to_another_subject_does_not_unwrap(
    database: Database, vault: Vault
) -> None:
    victim, attacker = uuid4(), uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, victim, NARRATIVE)
    await seal_and_store(database, vault, attacker, "x")
    async with database.transaction() as session:
        wrapped = await session.scalar(
            select(data_keys.c.wrapped_key).where(data_keys.c.subject_id == victim)
        )
        await session.execute(
            data_keys.update().where(data_keys.c.subject_id == attacker).values(wrapped_key=wrapped)
        )
    with pytest.raises(DecryptionFailed):
        await open_in_new_transaction(database, vault, attacker, sealed, context_for(narrative_id))


async def test_any_flipped_bit_or_truncation_is_detected(database: Database, vault: Vault) -> None:
    subject_id = uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, subject_id, NARRATIVE)
    context = context_for(narrative_id)
    tampered = []
    for position in (0, 1, 12, 13, 200, len(sealed) - 17, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[position] ^= 0x04
        tampered.append(bytes(altered))
    tampered += [sealed[:-1], sealed[:20], sealed[:1], b"", b"\x02" + sealed[1:]]
    async with database.transaction() as session:
        for candidate in tampered:
            with pytest.raises(DecryptionFailed):
                await vault.open(session, subject_id, candidate, context=context)
        assert await vault.open(session, subject_id, sealed, context=context) == NARRATIVE


async def test_destroying_a_key_erases_every_ciphertext_of_the_subject(
    database: Database, vault: Vault
) -> None:
    subject_id, other = uuid4(), uuid4()
    stored = [await seal_and_store(database, vault, subject_id, f"text {n}") for n in range(3)]
    other_id, other_sealed = await seal_and_store(database, vault, other, "survives")
    # Warm the cache, so the test shows that destroy evicts it.
    assert await open_in_new_transaction(
        database, vault, subject_id, stored[0][1], context_for(stored[0][0])
    )

    async with database.transaction() as session:
        assert await vault.destroy(session, subject_id) is True
    async with database.transaction() as session:
        assert await vault.destroy(session, subject_id) is False  # idempotent

    for narrative_id, sealed in stored:
        with pytest.raises(KeyDestroyed) as erased:
            await open_in_new_transaction(
                database, vault, subject_id, sealed, context_for(narrative_id)
            )
        assert erased.value.status_code == 410
    # Even a fresh process with every master key cannot read them.
    with pytest.raises(KeyDestroyed):
        await open_in_new_transaction(
            database, Vault(KEYRING, data_keys), subject_id, stored[1][1], context_for(stored[1][0])
        )
    # Nothing new can be sealed for an erased subject.
    async with database.transaction() as session:
        with pytest.raises(KeyDestroyed):
            await vault.seal(session, subject_id, "again", context="c")
    async with database.transaction() as session:
        row = (
            await session.execute(select(data_keys).where(data_keys.c.subject_id == subject_id))
        ).one()
    assert row.wrapped_key is None and row.destroyed_at is not None
    # Other subjects are untouched.
    assert (
        await open_in_new_transaction(database, vault, other, other_sealed, context_for(other_id))
        == "survives"
    )


async def test_destroying_a_subject_without_a_key_blocks_later_sealing(
    database: Database, vault: Vault
) -> None:
    subject_id = uuid4()
    async with database.transaction() as session:
        assert await vault.destroy(session, subject_id) is True
        assert await vault.destroy(session, subject_id) is False
    async with database.transaction() as session:
        with pytest.raises(KeyDestroyed):
            await vault.seal(session, subject_id, "new referral", context="c")


async def test_a_destroy_by_another_process_takes_effect_within_the_cache_ttl(
    database: Database,
) -> None:
    clock = ManualMonotonic()
    reader = Vault(KEYRING, data_keys, cache_ttl=30.0, monotonic=clock)
    eraser = Vault(KEYRING, data_keys)
    subject_id = uuid4()
    narrative_id, sealed = await seal_and_store(database, reader, subject_id, NARRATIVE)
    context = context_for(narrative_id)
    assert await open_in_new_transaction(database, reader, subject_id, sealed, context)

    async with database.transaction() as session:
        assert await eraser.destroy(session, subject_id)
    clock.now += 29.0
    # Still in the reader's cache: the documented staleness bound.
    assert await open_in_new_transaction(database, reader, subject_id, sealed, context)
    clock.now += 1.0
    with pytest.raises(KeyDestroyed):
        await open_in_new_transaction(database, reader, subject_id, sealed, context)


async def test_a_key_from_a_rolled_back_transaction_is_never_used(
    database: Database, vault: Vault
) -> None:
    subject_id = uuid4()

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        async with database.transaction() as session:
            lost = await vault.seal(session, subject_id, "lost", context="c")
            assert await vault.open(session, subject_id, lost, context="c") == "lost"
            raise Abandoned

    narrative_id, sealed = await seal_and_store(database, vault, subject_id, NARRATIVE)
    fresh = Vault(KEYRING, data_keys, cache_ttl=0)
    assert (
        await open_in_new_transaction(
            database, fresh, subject_id, sealed, context_for(narrative_id)
        )
        == NARRATIVE
    )
    with pytest.raises(DecryptionFailed):
        await open_in_new_transaction(database, fresh, subject_id, lost, "c")


async def test_concurrent_first_seals_of_one_subject_create_one_key(database: Database) -> None:
    subject_id = uuid4()
    vaults = [Vault(KEYRING, data_keys) for _ in range(8)]  # as if eight processes

    async def seal(vault: Vault, number: int) -> bytes:
        async with database.transaction() as session:
            sealed = await vault.seal(session, subject_id, f"text {number}", context="c")
            await asyncio.sleep(0.05)  # hold the transaction so the inserts collide
            return sealed

    sealed = await asyncio.gather(*(seal(vault, n) for n, vault in enumerate(vaults)))

    async with database.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(data_keys).where(data_keys.c.subject_id == subject_id)
        )
        assert count == 1
        reader = Vault(KEYRING, data_keys)
        for number, ciphertext in enumerate(sealed):
            assert await reader.open(session, subject_id, ciphertext, context="c") == (
                f"text {number}"
            )


async def test_rotation_keeps_old_keys_readable_and_rewrap_retires_them(
    database: Database,
) -> None:
    old = MasterKeyring.generate_setting("k2025b")
    new = MasterKeyring.generate_setting("k2026a")
    before = Vault(MasterKeyring.from_setting(old), rotation_data_keys)
    rotated = Vault(MasterKeyring.from_setting(f"{new},{old}"), rotation_data_keys, cache_ttl=0)
    new_only = Vault(MasterKeyring.from_setting(new), rotation_data_keys, cache_ttl=0)
    early, late = uuid4(), uuid4()

    async with database.transaction() as session:
        early_sealed = await before.seal(session, early, NARRATIVE, context="c")
    async with database.transaction() as session:
        assert await rotated.open(session, early, early_sealed, context="c") == NARRATIVE
        late_sealed = await rotated.seal(session, late, "after rotation", context="c")

    async def key_ids() -> dict[UUID, str]:
        async with database.transaction() as session:
            rows = await session.execute(
                select(rotation_data_keys.c.subject_id, rotation_data_keys.c.master_key_id)
            )
            return {subject: key_id for subject, key_id in rows}

    assert await key_ids() == {early: "k2025b", late: "k2026a"}
    # Removing the old key before rewrapping would lose the early subject's data.
    with pytest.raises(UnknownMasterKey, match="k2025b"):
        await open_in_new_transaction(database, new_only, early, early_sealed, "c")

    moved = []
    while True:
        async with database.transaction() as session:
            count = await rotated.rewrap(session, limit=1)
        if not count:
            break
        moved.append(count)
    assert moved == [1]
    assert await key_ids() == {early: "k2026a", late: "k2026a"}
    # The ciphertexts were not touched; the old master key is no longer needed.
    assert await open_in_new_transaction(database, new_only, early, early_sealed, "c") == NARRATIVE
    assert (
        await open_in_new_transaction(database, new_only, late, late_sealed, "c")
        == "after rotation"
    )


def key(length: int = 32, fill: bytes = b"k") -> str:
    return base64.b64encode(fill * length).decode()


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("k1", "entry 1 ('k1') must be <id>:<base64 key>"),
        ("k1:", "entry 1 ('k1') must be <id>:<base64 key>"),
        (f":{key()}", "entry 1 ('') must be <id>:<base64 key>"),
        (f"k1:{key()},", "entry 2 ('') must be <id>:<base64 key>"),
        ("k1:not base64!", "'k1' is not valid base64"),
        (f"k1:{key()[:-2]}", "'k1' is not valid base64"),
        (f"k1:{key(16)}", "'k1' is 16 bytes; AES-256 needs 32"),
        (f"k1:{key(48)}", "'k1' is 48 bytes"),
        (f"k1:{key()},k1:{key(fill=b'j')}", "'k1' appears more than once"),
        (f"k1:{key()},k2:{key()}", "'k2' repeats the key of another id"),
        (f"k 1:{key()}", "id 'k 1' must be 1-64 characters"),
    ],
)
def test_a_bad_keyring_setting_is_refused_naming_the_problem(setting: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        MasterKeyring.from_setting(setting)
    assert problem in str(refused.value)
    assert key() not in str(refused.value)


def test_a_generated_setting_parses_and_the_keyring_never_shows_its_keys() -> None:
    setting = MasterKeyring.generate_setting("k2026a")
    keyring = MasterKeyring.from_setting(f" {setting} , {DEV_KEYRING}")
    assert keyring.current_id == "k2026a"
    assert keyring.key_ids == ("k2026a", "dev2026a", "dev2025a")
    assert setting.split(":")[1] not in repr(keyring)
    assert MasterKeyring.generate_setting() != MasterKeyring.generate_setting()


def test_the_development_keyring_is_refused_in_production() -> None:
    fresh = MasterKeyring.generate_setting("prod2026a")
    dev_key_renamed = "renamed:" + DEV_KEYRING.split(",")[1].split(":")[1]
    for setting in (DEV_KEYRING, f"{fresh},{dev_key_renamed}"):
        with pytest.raises(ValueError, match="development key"):
            refuse_dev_keyring_in_production("production", setting)
        refuse_dev_keyring_in_production("development", setting)
        refuse_dev_keyring_in_production("test", setting)
    refuse_dev_keyring_in_production("production", fresh)
    with pytest.raises(ValueError, match="empty"):
        refuse_dev_keyring_in_production("production", "")


async def test_throughput_of_seal_and_open(database: Database, vault: Vault) -> None:
    """Measured, not asserted: the numbers go to the test output (``-s``)."""
    subject_id = uuid4()
    narrative_id, sealed = await seal_and_store(database, vault, subject_id, NARRATIVE)
    assert await open_in_new_transaction(
        database, vault, subject_id, sealed, context_for(narrative_id)
    )
    rounds = 5000
    async with database.transaction() as session:
        started = time.perf_counter()
        for number in range(rounds):
            context = f"crypto_test.narratives.body:{number}"
            ciphertext = await vault.seal(session, subject_id, NARRATIVE, context=context)
            await vault.open(session, subject_id, ciphertext, context=context)
        warm = time.perf_counter() - started

    uncached = Vault(KEYRING, data_keys, cache_ttl=0)
    cold_rounds = 300
    async with database.transaction() as session:
        started = time.perf_counter()
        for number in range(cold_rounds):
            context = f"crypto_test.narratives.body:{number}"
            ciphertext = await uncached.seal(session, subject_id, NARRATIVE, context=context)
            await uncached.open(session, subject_id, ciphertext, context=context)
        cold = time.perf_counter() - started
    size = len(NARRATIVE.encode())
    print(
        f"\nvault, {size}-byte text: warm key {rounds / warm:,.0f} seal+open/s "
        f"({warm / rounds * 1e6:.1f} µs each); "
        f"uncached (one key SELECT per call) {cold_rounds / cold:,.0f} seal+open/s"
    )
