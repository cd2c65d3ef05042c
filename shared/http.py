"""HTTP plumbing every service mounts: correlation ids, health, readiness and metrics."""

from __future__ import annotations

import re
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import context
from shared.context import TraceContext
from shared.errors import problem

CORRELATION_HEADER = "x-correlation-id"
_CORRELATION = CORRELATION_HEADER.encode()
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class BodyLimitMiddleware:
    """Refuse a request body larger than ``max_bytes`` with 413, before the app reads it all.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted
    as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = problem(413, "Request too large", self._detail())
                await response(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"The request body is larger than this service accepts ({self.max_bytes} bytes)."


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
