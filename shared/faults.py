"""Named crash points for fault-injection tests (kill -9 at the worst moment).

A process started with ``THREADLINE_FAULTS=relay.after_publish`` (comma-separated names) kills
itself with SIGKILL when it reaches that point, exactly as a power cut would. Outside tests the
variable is unset and a fault point costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(
    name.strip() for name in os.environ.get("THREADLINE_FAULTS", "").split(",") if name.strip()
)

KNOWN = frozenset(
    {
        "relay.after_publish",  # events sent to Kafka, rows not yet marked published
        "consumer.after_db_commit",  # effect committed, Kafka offset not yet committed
        "timers.before_commit",  # timer event written, transaction not committed
    }
)


def fault_point(name: str) -> None:
    """Die here, without cleanup, if this point was armed for this process."""
    if name not in KNOWN:
        raise ValueError(f"unknown fault point {name!r}")
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
