"""The hash chain: how an entry is hashed, appended and verified.

Each entry's hash is SHA-256 over its canonical JSON, a document holding every column of the row
(sequence, entry id, kind, time, subjects, the filter columns, the payload) and the previous
entry's hash. Canonical JSON is what Python's
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes, encoded
as UTF-8 (orjson with ``OPT_SORT_KEYS`` writes the same bytes for these values, eighteen times
faster, and is what runs); UUIDs are lower-case hyphenated strings, times are UTC
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, hashes are lower-case hex; payloads hold only strings, integers,
booleans, nulls, lists and objects (no floats), so they survive a round trip through JSONB
unchanged. The first entry's previous hash is
32 zero bytes. Sequence numbers are dense: a gap is a deleted entry.

Appends serialise on the chain head with a transaction-scoped advisory lock, so several
processes (replicas, consumers) can append and the chain stays one line.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import Row, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent.models import ledger
from shared.ids import uuid7

FORMAT_VERSION = 1
GENESIS_HASH = bytes(32)
#: pg_advisory_xact_lock key of the chain head (hashtext of a fixed name: same in every process).
CHAIN_LOCK_NAME = "threadline.consent.ledger"


def timestamp(moment: datetime | str) -> str:
    """A time as the chain spells it: UTC with microseconds and a Z (a string is taken as
    already spelt so, as the verifier reads it from the database)."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _encode(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset | set | tuple):
        return sorted(value) if isinstance(value, frozenset | set) else list(value)
    if isinstance(value, float):
        raise TypeError("floats are not allowed in ledger entries (their text is not canonical)")
    raise TypeError(f"{type(value).__name__} cannot go into a ledger entry")


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (entries are checked for floats by ``plain``)."""
    return orjson.dumps(value, default=_encode, option=_CANONICAL)


def reference_canonical(value: Any) -> bytes:
    """The definition ``canonical`` implements, in the standard library (for tests and for
    anyone re-implementing verification)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode
    ).encode("utf-8")


def _refuse_float(text: str) -> Any:
    raise TypeError(
        f"floats are not allowed in ledger entries (their text is not canonical): {text}"
    )


def plain(value: Any) -> Any:
    """``value`` as plain JSON types, exactly as it will be stored and hashed (no floats)."""
    return json.loads(canonical(value), parse_float=_refuse_float)


@dataclass(frozen=True)
class Draft:
    """An entry before it has a place in the chain."""

    kind: str
    subject_ids: Sequence[uuid.UUID]
    payload: dict[str, Any]
    from_agency: str | None = None
    to_agency: str | None = None
    purpose: str | None = None
    lawful_basis: str | None = None
    outcome: str | None = None
    consent_status: str | None = None


@dataclass(frozen=True)
class Entry:
    sequence: int
    entry_id: uuid.UUID
    kind: str
    recorded_at: datetime
    subject_ids: tuple[uuid.UUID, ...]
    from_agency: str | None
    to_agency: str | None
    purpose: str | None
    lawful_basis: str | None
    outcome: str | None
    consent_status: str | None
    payload: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    def row(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "entry_id": self.entry_id,
            "kind": self.kind,
            "recorded_at": self.recorded_at,
            "subject_ids": list(self.subject_ids),
            "from_agency": self.from_agency,
            "to_agency": self.to_agency,
            "purpose": self.purpose,
            "lawful_basis": self.lawful_basis,
            "outcome": self.outcome,
            "consent_status": self.consent_status,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def document(
    *,
    sequence: int,
    entry_id: uuid.UUID | str,
    kind: str,
    recorded_at: datetime | str,
    subject_ids: Iterable[uuid.UUID | str],
    from_agency: str | None,
    to_agency: str | None,
    purpose: str | None,
    lawful_basis: str | None,
    outcome: str | None,
    consent_status: str | None,
    payload: dict[str, Any],
    prev_hash: bytes,
) -> dict[str, Any]:
    """What an entry's hash covers: every column but the hash itself."""
    return {
        "v": FORMAT_VERSION,
        "sequence": sequence,
        "entry_id": str(entry_id),
        "kind": kind,
        "recorded_at": timestamp(recorded_at),
        "subject_ids": subject_strings(subject_ids),
        "from_agency": from_agency,
        "to_agency": to_agency,
        "purpose": purpose,
        "lawful_basis": lawful_basis,
        "outcome": outcome,
        "consent_status": consent_status,
        "payload": payload,
        "prev_hash": prev_hash.hex(),
    }


def subject_strings(subject_ids: Iterable[uuid.UUID | str]) -> list[str]:
    """Each id as ``str(uuid)`` writes it (8-4-4-4-12, lower case). orjson writes a list of
    UUIDs in one call: ``str()`` a UUID at a time was a tenth of the decision point's CPU for
    a household read's 774 subjects."""
    return orjson.loads(orjson.dumps(list(subject_ids), default=str))  # type: ignore[no-any-return]


def entry_hash(**columns: Any) -> bytes:
    return hashlib.sha256(canonical(document(**columns))).digest()


def seal(draft: Draft, *, sequence: int, prev_hash: bytes, recorded_at: datetime) -> Entry:
    """Give ``draft`` its place after ``prev_hash`` and its own hash."""
    columns: dict[str, Any] = {
        "sequence": sequence,
        "entry_id": uuid7(),
        "kind": draft.kind,
        "recorded_at": recorded_at,
        "subject_ids": tuple(draft.subject_ids),
        "from_agency": draft.from_agency,
        "to_agency": draft.to_agency,
        "purpose": draft.purpose,
        "lawful_basis": draft.lawful_basis,
        "outcome": draft.outcome,
        "consent_status": draft.consent_status,
        "payload": plain(draft.payload),
        "prev_hash": prev_hash,
    }
    return Entry(**columns, hash=entry_hash(**columns))


_LOCK_HEAD_CONSENTS = text("SELECT * FROM consent.ledger_lock_head_consents(:subjects)").bindparams(
    bindparam("subjects", type_=ARRAY(UUID(as_uuid=True)))
)

INSERT_SQL = (
    "INSERT INTO consent.ledger (sequence, entry_id, kind, recorded_at, subject_ids, from_agency, "
    "to_agency, purpose, lawful_basis, outcome, consent_status, payload, prev_hash, hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under ``session``, inside its transaction (which must have
    begun: call only after the session has executed a statement)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


@dataclass
class Chain:
    """The head of the chain inside one transaction that holds the chain lock.

    ``add`` seals entries in memory (so a caller learns its sequence and hash at once);
    ``flush`` inserts them in one pipelined round trip.
    """

    session: AsyncSession
    head_sequence: int
    head_hash: bytes
    now: datetime
    pending: list[Entry] = field(default_factory=list)

    @classmethod
    async def lock(
        cls, session: AsyncSession, now: datetime, subjects: Iterable[uuid.UUID] = ()
    ) -> tuple[Chain, Sequence[Row[Any]]]:
        """Take the chain lock (until the transaction ends), read the head and the consent
        records of ``subjects``, in one round trip (``consent.ledger_lock_head_consents``,
        migration 0005). Returns the chain and the consent records."""
        rows = (await session.execute(_LOCK_HEAD_CONSENTS, {"subjects": list(subjects)})).all()
        head, records = rows[0], rows[1:]
        chain = cls(
            session=session,
            head_sequence=int(head.head_sequence),
            head_hash=bytes(head.head_hash),
            now=now,
        )
        return chain, records

    def add(self, draft: Draft) -> Entry:
        entry = seal(
            draft,
            sequence=self.head_sequence + 1,
            prev_hash=self.head_hash,
            recorded_at=self.now,
        )
        self.pending.append(entry)
        self.head_sequence, self.head_hash = entry.sequence, entry.hash
        return entry

    async def flush(self) -> None:
        if not self.pending:
            return
        raw = await driver_connection(self.session)
        await raw.executemany(
            INSERT_SQL,
            [
                (
                    e.sequence,
                    e.entry_id,
                    e.kind,
                    e.recorded_at,
                    list(e.subject_ids),
                    e.from_agency,
                    e.to_agency,
                    e.purpose,
                    e.lawful_basis,
                    e.outcome,
                    e.consent_status,
                    orjson.dumps(e.payload).decode("utf-8"),
                    e.prev_hash,
                    e.hash,
                )
                for e in self.pending
            ],
        )
        self.pending.clear()


async def head(session: AsyncSession) -> tuple[int, bytes]:
    """The last entry's sequence and hash (0 and the genesis hash for an empty ledger)."""
    row = (
        await session.execute(
            select(ledger.c.sequence, ledger.c.hash).order_by(ledger.c.sequence.desc()).limit(1)
        )
    ).first()
    if row is None:
        return 0, GENESIS_HASH
    return int(row.sequence), bytes(row.hash)


# Verification


@dataclass(frozen=True)
class Break:
    """The first entry that does not hold, and why."""

    sequence: int
    problem: str


@dataclass
class ChainReport:
    entries_checked: int = 0
    first_sequence: int | None = None
    last_sequence: int = 0
    last_hash: bytes = GENESIS_HASH
    broken: Break | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


class ChainVerifier:
    """Checks rows in sequence order: density, the link to the previous hash, and each hash.

    Feed it rows (mappings or tuples in ``VERIFY_COLUMNS`` order); it stops at the first break.
    """

    def __init__(self, *, after_sequence: int = 0, after_hash: bytes = GENESIS_HASH) -> None:
        self.report = ChainReport(last_sequence=after_sequence, last_hash=after_hash)

    def check(self, row: Sequence[Any]) -> bool:
        """Check one row; False once the chain is broken (later rows are not looked at)."""
        report = self.report
        if report.broken is not None:
            return False
        (
            sequence,
            entry_id,
            kind,
            recorded_at,
            subject_ids,
            from_agency,
            to_agency,
            purpose,
            lawful_basis,
            outcome,
            consent_status,
            payload_text,
            prev_hash,
            stored_hash,
        ) = row
        expected = report.last_sequence + 1
        if sequence != expected:
            if sequence > expected:
                problem = (
                    f"entry {expected} is missing: the entry after {report.last_sequence} "
                    f"is {sequence} (deleted or renumbered)"
                )
            else:
                problem = f"entry {sequence} appears out of order after {report.last_sequence}"
            report.broken = Break(expected, problem)
            return False
        if bytes(prev_hash) != report.last_hash:
            report.broken = Break(
                sequence,
                f"entry {sequence} does not link to entry {report.last_sequence}: its prev_hash "
                f"is {bytes(prev_hash).hex()}, the previous entry's hash is "
                f"{report.last_hash.hex()}",
            )
            return False
        payload = orjson.loads(payload_text) if isinstance(payload_text, str) else payload_text
        computed = hashlib.sha256(
            canonical(
                document(
                    sequence=sequence,
                    entry_id=entry_id,
                    kind=kind,
                    recorded_at=recorded_at,
                    subject_ids=subject_ids,
                    from_agency=from_agency,
                    to_agency=to_agency,
                    purpose=purpose,
                    lawful_basis=lawful_basis,
                    outcome=outcome,
                    consent_status=consent_status,
                    payload=payload,
                    prev_hash=bytes(prev_hash),
                )
            )
        ).digest()
        if computed != bytes(stored_hash):
            report.broken = Break(
                sequence,
                f"entry {sequence} has been altered: its content hashes to {computed.hex()}, "
                f"the chain recorded {bytes(stored_hash).hex()}",
            )
            return False
        if report.first_sequence is None:
            report.first_sequence = sequence
        report.entries_checked += 1
        report.last_sequence = sequence
        report.last_hash = bytes(stored_hash)
        return True


# The rows as the verifier reads them: streamed with COPY (no cursor round trips), each column
# already spelt as the chain spells it, so that nothing but the payload needs parsing here.
VERIFY_COPY_SQL = """
SELECT sequence, entry_id,
       kind,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       array_to_string(subject_ids, ','),
       from_agency, to_agency, purpose, lawful_basis, outcome, consent_status,
       payload::text, encode(prev_hash, 'hex'), encode(hash, 'hex')
FROM consent.ledger WHERE sequence > {after:d} ORDER BY sequence
"""

_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return _COPY_ESCAPES.get(char, char)


def _copy_text(field: bytes) -> str | None:
    """One field of COPY's text format: ``\\N`` is NULL; backslash escapes are undone."""
    if field == b"\\N":
        return None
    text = field.decode("utf-8")
    if "\\" not in text:
        return text
    return _COPY_ESCAPE.sub(_unescape, text)


class MalformedRow(ValueError):
    pass


def parse_copy_row(line: bytes) -> tuple[Any, ...]:
    """A COPY text line of ``VERIFY_COPY_SQL`` as the tuple ``ChainVerifier.check`` takes."""
    fields = line.split(b"\t")
    if len(fields) != 14:
        raise MalformedRow(f"a ledger row has {len(fields)} columns, not 14")
    values = [_copy_text(field) for field in fields]
    sequence, entry_id, kind, recorded_at, subjects = values[:5]
    prev_hash, hash_ = values[12], values[13]
    if sequence is None or recorded_at is None or prev_hash is None or hash_ is None:
        raise MalformedRow("a ledger row lacks a required column")
    return (
        int(sequence),
        entry_id,
        kind,
        recorded_at,
        subjects.split(",") if subjects else [],
        *values[5:12],
        bytes.fromhex(prev_hash),
        bytes.fromhex(hash_),
    )


async def verify_copy(
    connection: Any, *, after_sequence: int = 0, after_hash: bytes = GENESIS_HASH
) -> ChainReport:
    """Stream the ledger after ``after_sequence`` with COPY and check every row in order.

    ``connection`` is an asyncpg connection; the check runs as the rows arrive, so the database
    produces the next rows while this process hashes the last ones.
    """
    verifier = ChainVerifier(after_sequence=after_sequence, after_hash=after_hash)
    pending = b""

    async def receive(chunk: bytes) -> None:
        nonlocal pending
        if verifier.report.broken is not None:
            return
        data = pending + chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        for line in lines:
            try:
                row = parse_copy_row(line)
            except (MalformedRow, ValueError) as error:
                verifier.report.broken = Break(
                    verifier.report.last_sequence + 1,
                    f"the entry after {verifier.report.last_sequence} cannot be read: {error}",
                )
                return
            if not verifier.check(row):
                return

    await connection.copy_from_query(
        VERIFY_COPY_SQL.format(after=int(after_sequence)), output=receive, format="text"
    )
    return verifier.report
