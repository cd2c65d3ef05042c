"""Service-to-service HTTP POSTs on the hot paths: the decision point (asked before every
disclosure) and webhooks (one per delivery).

They use aiohttp rather than httpx. Measured on this machine (23 November 2026), a client
posting 4,000 small JSON bodies to a local server spent, per request, 1.7 ms of CPU in httpx
against 0.38 ms in aiohttp one at a time, and 3.4 ms against 0.18 ms at 64 at once, where
httpcore's pool walks every connection for every request. httpx stays for the rare calls (tokens)
and for tests, which talk to apps in process through ``httpx.ASGITransport``: ``HttpxPoster``
puts such a client behind the same interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Unreachable(Exception):
    """No HTTP answer at all: refused, reset, timed out, or the name did not resolve."""


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply: ...

    async def aclose(self) -> None: ...


class AiohttpPoster:
    """POSTs over one pooled aiohttp session, made on first use (inside the running loop).

    Redirects are not followed (a webhook receiver that redirects has failed, and the decision
    point never redirects); no cookies are kept; proxies come from configuration, not the
    environment. ``base_url`` is prefixed to relative URLs.
    """

    def __init__(self, *, timeout: float, max_connections: int = 100, base_url: str = "") -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        if url.startswith("/"):
            url = self._base_url + url
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                content = await response.read()
                return Reply(response.status, dict(response.headers), content)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise Unreachable(repr(error)) from error

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxPoster:
    """An httpx client (e.g. one bound to an app in process) behind the ``Poster`` interface."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            response = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as error:
            raise Unreachable(repr(error)) from error
        return Reply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        return None  # the caller owns the client
