"""Correlation context: follows a request into the events it causes and the consumers of those."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import structlog


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
    with structlog.contextvars.bound_contextvars(
        correlation_id=context.correlation_id, causation_id=context.causation_id
    ):
        try:
            yield context
        finally:
            _current.reset(token)
