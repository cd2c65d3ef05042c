"""Time-ordered identifiers (UUID version 7, RFC 9562 §5.7).

A version 4 UUID is random throughout, so each new key in a B-tree index lands on a random
leaf page: on a table that only grows, such as the consent ledger, every insert then reads (and
later writes back) a page that is most likely not in memory, and after each checkpoint logs it
whole. A version 7 UUID starts with the Unix time in milliseconds, so new keys arrive at the
index's right-hand edge, where the pages are hot. The remaining 74 bits are random, so ids are
still unguessable and unique across processes. (Python's ``uuid.uuid7`` arrives in 3.14.)
"""

from __future__ import annotations

import secrets
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A version 7 UUID for the current time (or ``now_ns``, Unix nanoseconds)."""
    milliseconds = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    random = secrets.randbits(74)
    return uuid.UUID(
        int=(milliseconds & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | (random >> 62) << 64
        | _VARIANT_RFC
        | (random & 0x3FFF_FFFF_FFFF_FFFF)
    )
