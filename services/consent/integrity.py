"""Is the ledger intact? The chain recomputed from the rows, and the signed checkpoints compared
with the entries they name. Used by ``threadline ledger verify`` and the DPO's integrity view."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.consent import checkpoints
from services.consent.checkpoints import Checkpoint
from services.consent.ledger import GENESIS_HASH, ChainReport, verify_copy


@dataclass(frozen=True)
class CheckpointResult:
    checkpoint: Checkpoint
    signature_valid: bool
    matches_ledger: bool | None  # None: not compared (its signature does not hold)
    problem: str | None


@dataclass
class IntegrityResult:
    chain: ChainReport
    scope: str
    checkpoints: list[CheckpointResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def checkpoint_problems(self) -> list[CheckpointResult]:
        return [result for result in self.checkpoints if result.problem is not None]

    @property
    def intact(self) -> bool:
        return self.chain.intact and not self.checkpoint_problems

    @property
    def first_broken(self) -> tuple[int, str] | None:
        """The first entry that does not hold, and why (chain breaks and checkpoint mismatches)."""
        found: list[tuple[int, str]] = []
        if self.chain.broken is not None:
            found.append((self.chain.broken.sequence, self.chain.broken.problem))
        for result in self.checkpoint_problems:
            assert result.problem is not None
            found.append((result.checkpoint.sequence, result.problem))
        return min(found, key=lambda item: item[0]) if found else None


async def verify(
    connection: asyncpg.Connection,
    checkpoint_dir: Path,
    public_key: Ed25519PublicKey | None,
    *,
    since_last_checkpoint: bool = False,
) -> IntegrityResult:
    """Verify the chain (all of it, or from the newest valid checkpoint) and every checkpoint.

    ``connection`` is used inside a REPEATABLE READ transaction of its own when it is not in one
    already, so the rows and the checkpoint comparison see one snapshot.
    """
    started = time.perf_counter()
    found = checkpoints.read_all(checkpoint_dir)
    signature_ok = {
        cp.sequence: public_key is not None and cp.verifies_with(public_key) for cp in found
    }
    transaction = None
    if not connection.is_in_transaction():
        transaction = connection.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
    try:
        stored = {
            int(row["sequence"]): bytes(row["hash"])
            for row in await connection.fetch(
                "SELECT sequence, hash FROM consent.ledger WHERE sequence = ANY($1::bigint[])",
                [cp.sequence for cp in found],
            )
        }
        results: list[CheckpointResult] = []
        for cp in found:
            if not signature_ok[cp.sequence]:
                results.append(
                    CheckpointResult(
                        cp,
                        False,
                        None,
                        f"checkpoint {cp.sequence} ({cp.path}) is not signed by the trusted key",
                    )
                )
                continue
            at = stored.get(cp.sequence)
            if at is None:
                problem: str | None = (
                    f"entry {cp.sequence}, named by a signed checkpoint, is not in the ledger "
                    "(entries deleted from its end?)"
                )
            elif at.hex() != cp.hash:
                problem = (
                    f"entry {cp.sequence} has hash {at.hex()}, but the checkpoint signed at "
                    f"{cp.signed_at} recorded {cp.hash}: the chain was rewritten at or before it"
                )
            else:
                problem = None
            results.append(CheckpointResult(cp, True, problem is None, problem))
        after_sequence, after_hash = 0, GENESIS_HASH
        scope = "full"
        if since_last_checkpoint:
            good = [r.checkpoint for r in results if r.problem is None]
            if good:
                after_sequence, after_hash = good[-1].sequence, bytes.fromhex(good[-1].hash)
                scope = "since_last_checkpoint"
        chain = await verify_copy(connection, after_sequence=after_sequence, after_hash=after_hash)
    finally:
        if transaction is not None:
            await transaction.rollback()
    return IntegrityResult(
        chain=chain, scope=scope, checkpoints=results, seconds=time.perf_counter() - started
    )
