"""The consent service's periodic jobs, as self-rescheduling durable timers: signed checkpoints
of the ledger head, and the retention sweep. Each fires in a transaction of its own (claimed
with SKIP LOCKED, so one replica runs it) and schedules its next run in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from services.consent import checkpoints, retention
from services.consent.ledger import head
from services.consent.models import RetentionRun, plumbing
from services.consent.writer import run_batch
from shared import timers
from shared.logging import get_logger
from shared.timers import DueTimer, TimerHandler

log = get_logger(__name__)

CHECKPOINT_TIMER = "ledger.checkpoint"
RETENTION_TIMER = "retention.sweep"


async def write_checkpoint(
    session: AsyncSession, key: Ed25519PrivateKey, directory: Path, now: datetime
) -> checkpoints.Checkpoint | None:
    """Sign the current head and write it out (nothing for an empty ledger)."""
    sequence, hash_ = await head(session)
    if sequence == 0:
        return None
    checkpoint = checkpoints.sign(key, sequence=sequence, hash_=hash_, now=now)
    path = checkpoints.write(directory, checkpoint)
    if path is not None:
        log.info("ledger.checkpoint_written", sequence=sequence, path=str(path))
    return checkpoint


async def sweep(session: AsyncSession, policy: retention.RetentionPolicy, now: datetime) -> int:
    """Expire every subject whose narratives passed retention (in batches); purge old reads;
    record the run."""
    expired = 0
    while True:
        due = await retention.due_for_expiry(session, policy, now, retention.SWEEP_LIMIT)
        if not due:
            break
        await run_batch(session, [retention.ExpireNarratives(tuple(due), policy)], now)
        expired += len(due)
        if len(due) < retention.SWEEP_LIMIT:
            break
    purged = await retention.purge_access_log(session, policy, now)
    session.add(
        RetentionRun(
            ran_at=now,
            policy=policy.describe(),
            narratives_expired=expired,
            access_records_purged=purged,
        )
    )
    await session.flush()
    log.info("retention.swept", narratives_expired=expired, access_records_purged=purged)
    return expired


@dataclass(frozen=True)
class Jobs:
    signing_key: Ed25519PrivateKey
    checkpoint_dir: Path
    checkpoint_every: timedelta
    policy: retention.RetentionPolicy
    retention_every: timedelta

    def handlers(self) -> dict[str, TimerHandler]:
        return {CHECKPOINT_TIMER: self.checkpoint, RETENTION_TIMER: self.retention}

    async def checkpoint(self, session: AsyncSession, timer: DueTimer, now: datetime) -> None:
        await write_checkpoint(session, self.signing_key, self.checkpoint_dir, now)
        await timers.schedule(
            session,
            plumbing,
            kind=CHECKPOINT_TIMER,
            aggregate_id=CHECKPOINT_TIMER,
            due_at=now + self.checkpoint_every,
        )

    async def retention(self, session: AsyncSession, timer: DueTimer, now: datetime) -> None:
        await sweep(session, self.policy, now)
        await timers.schedule(
            session,
            plumbing,
            kind=RETENTION_TIMER,
            aggregate_id=RETENTION_TIMER,
            due_at=now + self.retention_every,
        )
