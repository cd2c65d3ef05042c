"""HTTP plumbing every service mounts: correlation ids, health, readiness and metrics."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import context
from shared.context import TraceContext

CORRELATION_HEADER = "x-correlation-id"
_CORRELATION = CORRELATION_HEADER.encode()
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class CorrelationMiddleware:
    """Bind a correlation id (the caller's, if well-formed) for the request and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = traceparent = ""
        for name, value in scope["headers"]:  # ASGI servers give header names in lower case
            if name == _CORRELATION:
                offered = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        correlation_id = offered if _SAFE_ID.match(offered) else str(uuid.uuid4())
        if not _TRACEPARENT.match(traceparent):
            traceparent = context.new_traceparent()
        trace = TraceContext(correlation_id=correlation_id, traceparent=traceparent)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (_CORRELATION, correlation_id.encode()),
                ]
            await send(message)

        with context.bound(trace):
            await self.app(scope, receive, send_with_id)
