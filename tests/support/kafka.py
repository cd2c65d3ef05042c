"""Reading topics back in tests, through a real consumer of the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import ConsumerRecord

from shared.kafka import make_consumer

Record = ConsumerRecord[bytes, bytes]


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool],
    keep: Callable[[Record], bool] = lambda _: True,
    timeout: float = 30.0,
) -> list[Record]:
    """Every record of ``topic`` from the start that ``keep`` accepts, once ``until`` holds."""
    consumer = make_consumer(
        bootstrap, group_id=f"test-reader-{uuid.uuid4().hex[:8]}", client_id="test-reader"
    )
    consumer.subscribe([topic])
    await consumer.start()
    found: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                found.extend(record for record in records if keep(record))
            if until(found):
                return found
        raise AssertionError(f"timed out reading {topic}: {len(found)} matching records")
    finally:
        await consumer.stop()


def header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode()
    return None


async def eventually(
    check: Callable[[], object], *, timeout: float = 30.0, every: float = 0.2
) -> None:
    """Wait until ``check`` (sync or async) returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        last = result
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
