"""Access tokens a Threadline service obtains for itself (OAuth2 client credentials, RFC 6749
§4.4), kept until shortly before they expire.

    tokens = ClientCredentials(token_url, client_id, secret, audience="threadline:consent")
    client = DisclosureClient(consent_url, token=tokens)
"""

from __future__ import annotations

import asyncio
import time

import httpx

from shared.settings import DisclosingSettings


class TokenError(Exception):
    """The identity provider refused or could not be reached."""


class ClientCredentials:
    """An async token source: ``await tokens()`` gives a bearer token for ``audience``."""

    #: A token is renewed this many seconds before it expires, so it is never sent stale.
    MARGIN_SECONDS = 30.0

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        audience: str,
        scope: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.token_url = token_url
        self.audience = audience
        self.scope = scope
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        if self._token is not None and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch()
        assert self._token is not None
        return self._token

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials", "audience": self.audience}
        if self.scope:
            form["scope"] = self.scope
        try:
            response = await self._http.post(self.token_url, data=form, auth=self._auth)
        except httpx.HTTPError as error:
            raise TokenError(f"token endpoint unreachable: {error!r}") from error
        if response.status_code != 200:
            raise TokenError(f"token endpoint said {response.status_code}: {response.text[:300]}")
        body = response.json()
        self._token = str(body["access_token"])
        lifetime = float(body.get("expires_in", 300))
        self._expires = time.monotonic() + max(lifetime - self.MARGIN_SECONDS, lifetime / 2)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def platform_tokens(
    settings: DisclosingSettings, *, audience: str = "threadline:consent"
) -> ClientCredentials:
    """The token source of a service's platform client, for the consent service by default."""
    return ClientCredentials(
        settings.token_url, settings.client_id, settings.client_secret, audience=audience
    )
