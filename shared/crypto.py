"""Encryption at rest: a data key per subject (a child), wrapped by a master key from settings.

Narratives are sealed with AES-256-GCM under their subject's data key, so a database dump holds
no plaintext, and destroying one subject's wrapped key makes every ciphertext of that subject
unreadable for good (crypto-shredding) without finding and rewriting those rows.

Formats (stable; a change needs a new version byte):

- keyring setting: ``"<id>:<base64 of 32 bytes>,<id>:<...>"``; the first key is current (it wraps
  new data keys), the others only unwrap, which is what lets master keys rotate;
- wrapped data key: ``0x01 | nonce (12) | AES-256-GCM(master key, data key) | tag (16)`` with the
  associated data ``0x01 | <master key id>|threadline.data-key.v1|<subject id>``, so a wrapped key
  copied to another subject's row, or relabelled with another master key id, does not unwrap.
  AES-GCM rather than AES key wrap (RFC 3394/5649), because key wrap takes no associated data;
  random nonces are safe for 2**32 wraps per master key, far more than there are children;
- sealed text: ``0x01 | nonce (12) | AES-256-GCM(data key, UTF-8 text) | tag (16)`` with the
  associated data ``0x01 | <context>|<subject id>``. It does not depend on the master key, so
  rotating (and rewrapping under) a master key never touches the ciphertexts.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import service_metadata
from shared.errors import DomainError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES
FORMAT_V1 = b"\x01"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_WRAP_LABEL = b"threadline.data-key.v1"
_SESSION_KEYS = "threadline.vault.keys"

# For development and tests only: refused in production by ``refuse_dev_keyring_in_production``.
DEV_KEYRING = (
    "dev2026a:ZGV2LW9ubHktbWFzdGVyLWtleS0xLW5vdC1zZWNyZXQ=,"
    "dev2025a:ZGV2LW9ubHktbWFzdGVyLWtleS0wLW5vdC1zZWNyZXQ="
)


class CryptoError(Exception):
    """Base of the errors of this module; none of them carries key material or plaintext."""


class DecryptionFailed(CryptoError):
    """The ciphertext or wrapped key was altered, truncated, or presented under the wrong context
    or subject. Never the client's fault, so it is a 500, not a domain error."""


class UnknownMasterKey(CryptoError):
    """A data key is wrapped by a master key that is no longer in the keyring: an operator retired
    it before ``Vault.rewrap`` had moved every data key off it."""


class KeyDestroyed(DomainError):
    """The subject's data key was destroyed (erasure): what was sealed for it is gone for good."""

    status_code = 410
    title = "Erased"


class MasterKeyring:
    """The master keys of one deployment, from a setting; never printed, never stored."""

    __slots__ = ("_ciphers", "_material", "current_id")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        ciphers: dict[str, AESGCM] = {}
        material: set[bytes] = set()
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(
                    f"master key id {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
                )
            if key_id in ciphers:
                raise ValueError(f"master key id {key_id!r} appears more than once")
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"master key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )
            if key in material:
                raise ValueError(f"master key {key_id!r} repeats the key of another id")
            ciphers[key_id] = AESGCM(key)
            material.add(key)
        if not ciphers:
            raise ValueError("the master keyring is empty; it needs at least one <id>:<key>")
        self._ciphers = ciphers
        self._material = frozenset(material)
        self.current_id: str = next(iter(ciphers))

    @classmethod
    def from_setting(cls, setting: str) -> MasterKeyring:
        """Parse ``"<id>:<base64 32 bytes>,..."``; errors name the entry, never the key."""
        keys: list[tuple[str, bytes]] = []
        if setting.strip():
            for position, entry in enumerate(setting.split(","), start=1):
                key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
                if not separator or not key_id or not encoded:
                    raise ValueError(
                        f"master keyring entry {position} ({key_id!r}) must be <id>:<base64 key>"
                    )
                try:
                    key = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError(f"master key {key_id!r} is not valid base64") from None
                keys.append((key_id, key))
        return cls(keys)

    @staticmethod
    def generate_setting(key_id: str | None = None) -> str:
        """A fresh one-key setting, to start a keyring or to put first in a rotation."""
        key_id = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
        setting = f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"
        MasterKeyring.from_setting(setting)
        return setting

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """Wrap under the current key, bound to ``aad`` and to the key's id."""
        nonce = os.urandom(NONCE_BYTES)
        wrapped = self._ciphers[self.current_id].encrypt(
            nonce, data_key, _wrap_aad(self.current_id, aad)
        )
        return self.current_id, FORMAT_V1 + nonce + wrapped

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        master = self._ciphers.get(key_id)
        if master is None:
            raise UnknownMasterKey(f"master key {key_id!r} is not in the keyring")
        if wrapped[:1] != FORMAT_V1 or len(wrapped) != WRAPPED_BYTES:
            raise DecryptionFailed("the wrapped data key is not in a known format")
        nonce, body = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
        try:
            return master.decrypt(nonce, body, _wrap_aad(key_id, aad))
        except InvalidTag:
            raise DecryptionFailed(
                "the wrapped data key does not unwrap for this subject"
            ) from None

    def shares_a_key_with(self, other: MasterKeyring) -> bool:
        """Whether the two rings hold the same key material under any id."""
        return not self._material.isdisjoint(other._material)

    def __repr__(self) -> str:
        return f"MasterKeyring(current={self.current_id!r}, ids={list(self._ciphers)!r})"


def _wrap_aad(key_id: str, aad: bytes) -> bytes:
    return FORMAT_V1 + key_id.encode() + b"|" + aad


def refuse_dev_keyring_in_production(environment: str, keyring_setting: str) -> None:
    """Raise if a production keyring holds any development key, under whatever id or order."""
    if environment != "production":
        return
    keyring = MasterKeyring.from_setting(keyring_setting)
    if keyring.shares_a_key_with(MasterKeyring.from_setting(DEV_KEYRING)):
        raise ValueError(
            "the master keyring holds a development key; generate production keys with "
            "MasterKeyring.generate_setting()"
        )


def wrapping_aad(subject_id: UUID) -> bytes:
    """What a wrapped data key is bound to (besides its master key id): its subject."""
    return _WRAP_LABEL + b"|" + str(subject_id).encode()


def sealing_aad(context: str, subject_id: UUID) -> bytes:
    """What a sealed text is bound to: its format, where it is stored, and whose it is.

    The subject id is fixed-length and last, so a ``|`` inside the context is unambiguous.
    """
    if not context:
        raise ValueError("a sealed text needs a context naming where it is stored")
    return FORMAT_V1 + f"{context}|{subject_id}".encode()


def attach_data_keys(metadata: MetaData) -> Table:
    """Define ``data_keys`` on a service's schema-bound metadata.

    A destroyed key keeps its row, as proof of erasure and so that nothing is sealed for that
    subject again.
    """
    if not metadata.schema:
        raise ValueError("the data key table needs a schema-bound MetaData")
    return Table(
        "data_keys",
        metadata,
        Column("subject_id", PG_UUID(as_uuid=True), primary_key=True),
        Column("master_key_id", String(64)),
        Column("wrapped_key", LargeBinary),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("destroyed_at", DateTime(timezone=True)),
        CheckConstraint(
            "(wrapped_key IS NOT NULL AND master_key_id IS NOT NULL AND destroyed_at IS NULL)"
            " OR (wrapped_key IS NULL AND destroyed_at IS NOT NULL)",
            name="live_or_destroyed",
        ),
    )


def create_data_key_table(connection: Connection, schema: str) -> None:
    """Create ``data_keys`` in ``schema``, for the Alembic revision of a service that seals."""
    attach_data_keys(service_metadata(schema)).create(connection, checkfirst=True)


class _KeyCache:
    """A bounded LRU of unwrapped data keys, each trusted for ``ttl`` seconds.

    The time limit is what makes a ``destroy`` committed by another process take effect here too.
    """

    def __init__(self, size: int, ttl: float, monotonic: Callable[[], float]) -> None:
        self._entries: OrderedDict[UUID, tuple[AESGCM, float]] = OrderedDict()
        self._size = size
        self._ttl = ttl
        self._monotonic = monotonic

    def get(self, subject_id: UUID) -> AESGCM | None:
        entry = self._entries.get(subject_id)
        if entry is None:
            return None
        if entry[1] <= self._monotonic():
            del self._entries[subject_id]
            return None
        self._entries.move_to_end(subject_id)
        return entry[0]

    def put(self, subject_id: UUID, cipher: AESGCM) -> None:
        if self._size <= 0 or self._ttl <= 0:
            return
        self._entries[subject_id] = (cipher, self._monotonic() + self._ttl)
        self._entries.move_to_end(subject_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def evict(self, subject_id: UUID) -> None:
        self._entries.pop(subject_id, None)


class Vault:
    """Seals and opens one service's narratives; one per process, like its ``Database``.

    Every method runs in the caller's transaction and never commits. A destroy is final in the
    database when its transaction commits; a process that had the key cached stops using it
    within ``cache_ttl`` seconds.
    """

    def __init__(
        self,
        keyring: MasterKeyring,
        data_keys: Table,
        *,
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyring = keyring
        self.data_keys = data_keys
        self._cache = _KeyCache(cache_size, cache_ttl, monotonic)

    async def seal(
        self, session: AsyncSession, subject_id: UUID, plaintext: str, *, context: str
    ) -> bytes:
        """Encrypt ``plaintext`` for ``subject_id``, creating the subject's data key if needed."""
        aad = sealing_aad(context, subject_id)
        cipher = await self._data_key(session, subject_id, create=True)
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + cipher.encrypt(nonce, plaintext.encode(), aad)

    def new_subject_key(self, subject_id: UUID) -> tuple[list[Any], AESGCM]:
        """A data key for a subject that has none yet (one just created, with a fresh id).

        Returns the ``data_keys`` row values (subject_id, master_key_id, wrapped_key) for the
        caller to insert in the transaction that writes the subject (``created_at`` left to its
        default, ``now()``, as ``_load`` expects), and the cipher to seal with.
        Nothing is cached: the transaction may still roll back, and the key with it.
        """
        data_key = AESGCM.generate_key(bit_length=256)
        key_id, wrapped = self.keyring.wrap(data_key, wrapping_aad(subject_id))
        return [subject_id, key_id, wrapped], AESGCM(data_key)

    @staticmethod
    def seal_with(cipher: AESGCM, subject_id: UUID, plaintext: str, *, context: str) -> bytes:
        """What ``seal`` writes, with a cipher in hand (from :meth:`new_subject_key`)."""
        nonce = os.urandom(NONCE_BYTES)
        aad = sealing_aad(context, subject_id)
        return FORMAT_V1 + nonce + cipher.encrypt(nonce, plaintext.encode(), aad)

    async def open(
        self, session: AsyncSession, subject_id: UUID, sealed: bytes, *, context: str
    ) -> str:
        """Decrypt what ``seal`` produced for the same subject and context."""
        aad = sealing_aad(context, subject_id)
        if sealed[:1] != FORMAT_V1 or len(sealed) < 1 + NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed("the sealed text is not in a known format")
        cipher = await self._data_key(session, subject_id, create=False)
        try:
            plaintext = cipher.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise DecryptionFailed(
                "the sealed text was altered, or belongs to another context or subject"
            ) from None
        return plaintext.decode()

    async def destroy(self, session: AsyncSession, subject_id: UUID) -> bool:
        """Erase the subject's data key; False if it was already destroyed.

        A subject with no key yet gets a destroyed one, so nothing can be sealed for it later.
        """
        self._cache.evict(subject_id)
        session.info.get(_SESSION_KEYS, {}).pop(subject_id, None)
        table = self.data_keys
        statement = (
            insert(table)
            .values(subject_id=subject_id, destroyed_at=func.now())
            .on_conflict_do_update(
                index_elements=[table.c.subject_id],
                set_={"wrapped_key": None, "destroyed_at": func.now()},
                where=table.c.destroyed_at.is_(None),
            )
            .returning(table.c.subject_id)
        )
        destroyed = (await session.execute(statement)).first() is not None
        self._cache.evict(subject_id)  # again: another task may have cached it during the await
        return destroyed

    async def rewrap(self, session: AsyncSession, *, limit: int = 500) -> int:
        """Move up to ``limit`` data keys onto the current master key; returns how many moved.

        Run until it returns 0 before removing an old master key from the keyring. The data keys
        (and so every ciphertext) stay the same.
        """
        table = self.data_keys
        current = self.keyring.current_id
        rows = (
            await session.execute(
                select(table.c.subject_id, table.c.master_key_id, table.c.wrapped_key)
                .where(table.c.master_key_id != current, table.c.wrapped_key.is_not(None))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for subject_id, key_id, wrapped in rows:
            data_key = self.keyring.unwrap(key_id, wrapped, wrapping_aad(subject_id))
            new_id, rewrapped = self.keyring.wrap(data_key, wrapping_aad(subject_id))
            await session.execute(
                update(table)
                .where(table.c.subject_id == subject_id)
                .values(master_key_id=new_id, wrapped_key=rewrapped)
            )
        return len(rows)

    async def _data_key(self, session: AsyncSession, subject_id: UUID, *, create: bool) -> AESGCM:
        cached = self._cache.get(subject_id)
        if cached is not None:
            return cached
        # Keys this transaction created or read: safe to reuse within it (they commit or roll
        # back together), and it saves a SELECT per text when a new child's texts are sealed.
        this_transaction: dict[UUID, AESGCM] = session.info.setdefault(_SESSION_KEYS, {})
        if subject_id in this_transaction:
            return this_transaction[subject_id]
        cipher = await self._fetch_or_create(session, subject_id, create=create)
        this_transaction[subject_id] = cipher
        return cipher

    async def _fetch_or_create(
        self, session: AsyncSession, subject_id: UUID, *, create: bool
    ) -> AESGCM:
        row = await self._load(session, subject_id)
        if row is None and create:
            data_key = AESGCM.generate_key(bit_length=256)
            new_key_id, new_wrapped = self.keyring.wrap(data_key, wrapping_aad(subject_id))
            inserted = await session.execute(
                insert(self.data_keys)
                .values(
                    subject_id=subject_id,
                    master_key_id=new_key_id,
                    wrapped_key=new_wrapped,
                    created_at=func.now(),
                )
                .on_conflict_do_nothing(index_elements=[self.data_keys.c.subject_id])
                .returning(self.data_keys.c.subject_id)
            )
            if inserted.first() is not None:
                # Not cached: this transaction may still roll back, and the key with it.
                return AESGCM(data_key)
            # Another transaction created it first; READ COMMITTED lets a new statement see it.
            row = await self._load(session, subject_id)
        if row is None:
            raise DecryptionFailed("no data key exists for this subject")
        key_id, wrapped, created_here = row
        cipher = AESGCM(self.keyring.unwrap(key_id, wrapped, wrapping_aad(subject_id)))
        if not created_here:
            self._cache.put(subject_id, cipher)
        return cipher

    async def _load(
        self, session: AsyncSession, subject_id: UUID
    ) -> tuple[str, bytes, bool] | None:
        """The subject's live key row, and whether this transaction may have created it.

        Keys are created with ``created_at = now()`` (the transaction's start), so a visible row
        with another ``created_at`` was committed by another transaction and is safe to cache.
        """
        table = self.data_keys
        row = (
            await session.execute(
                select(
                    table.c.master_key_id,
                    table.c.wrapped_key,
                    (table.c.created_at == func.now()).label("created_here"),
                ).where(table.c.subject_id == subject_id)
            )
        ).first()
        if row is None:
            return None
        if row.wrapped_key is None:
            raise KeyDestroyed("this subject's data was erased")
        return row.master_key_id, row.wrapped_key, bool(row.created_here)
