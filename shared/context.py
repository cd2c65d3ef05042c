"""Correlation context: follows a request into the events it causes and the consumers of those."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TraceContext:
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None


_current: ContextVar[TraceContext | None] = ContextVar("threadline_trace", default=None)


def new_traceparent() -> str:
    """A fresh W3C traceparent (version 00, sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current() -> TraceContext:
    """The context of the work in hand; a fresh one when nothing set it (e.g. a timer firing)."""
    found = _current.get()
    if found is None:
        return TraceContext(correlation_id=str(uuid.uuid4()), traceparent=new_traceparent())
    return found


@contextmanager
def bound(context: TraceContext) -> Iterator[TraceContext]:
    """Make ``context`` current for the block and for the log lines written inside it."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def add_to_log(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the current context's ids on every log line written inside
    :func:`bound`. Read when a line is written, instead of bound into structlog's own context
    variables for every request and message (that binding was 3% of a busy service's CPU)."""
    found = _current.get()
    if found is not None:
        event.setdefault("correlation_id", found.correlation_id)
        event.setdefault("causation_id", found.causation_id)
    return event
