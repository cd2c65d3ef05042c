"""Calls to the services' APIs, always with the signed-in person's own access
token: the APIs decide what the person may see and do, and the portal shows their answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.portal.sessions import Session
from services.portal.settings import PortalSettings
from shared import context
from shared.logging import get_logger

log = get_logger(__name__)


class ApiError(Exception):
    """The API refused or failed; ``status`` decides which page the person sees."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors or []


@dataclass
class ReferralList:
    items: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True  # False when more pages existed than were read


class Apis:
    MAX_PAGES = 5

    def __init__(self, settings: PortalSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self._http = http

    async def _call(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """The answer's JSON (or, with ``raw``, the response itself); ApiError for a 4xx/5xx."""
        trace = context.current()
        sent = {
            "Authorization": f"Bearer {session.access_token}",
            "Accept": "application/json",
            "X-Correlation-ID": trace.correlation_id,
            **({"traceparent": trace.traceparent} if trace.traceparent else {}),
            **(headers or {}),
        }
        try:
            response = await self._http.request(method, url, params=params, json=json, headers=sent)
        except httpx.HTTPError as error:
            log.warning("portal.api_unavailable", url=url, error=repr(error))
            raise ApiError(503, "The service is not answering just now.") from error
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise ApiError(
                response.status_code,
                str(problem.get("detail") or response.reason_phrase),
                problem.get("errors") if isinstance(problem.get("errors"), list) else None,
            )
        return response if raw else response.json()

    async def get(self, session: Session, url: str, **params: Any) -> Any:
        """A read from any of the services, with the person's token; ``None`` params dropped."""
        sent = {key: value for key, value in params.items() if value is not None}
        return await self._call(session, "GET", url, params=sent or None)

    async def post(self, session: Session, url: str, body: dict[str, Any]) -> Any:
        return await self._call(session, "POST", url, json=body)

    async def download(self, session: Session, url: str) -> httpx.Response:
        """A document (a subject access export, an image) as the service sent it."""
        response: httpx.Response = await self._call(
            session, "GET", url, headers={"Accept": "*/*"}, raw=True
        )
        return response

    # -- referrals -----------------------------------------------------------------------------

    async def referrals(self, session: Session, **filters: str) -> ReferralList:
        """Every referral the person may see (their school's, or all for the MASH), following
        the API's cursor for up to MAX_PAGES pages of 200."""
        result = ReferralList()
        cursor: str | None = None
        for _ in range(self.MAX_PAGES):
            params: dict[str, Any] = {"limit": 200, **filters}
            if cursor:
                params["cursor"] = cursor
            page = await self._call(
                session, "GET", f"{self.settings.referrals_url}/v1/referrals", params=params
            )
            result.items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return result
        result.complete = False
        return result

    async def referral(self, session: Session, referral_id: uuid.UUID) -> dict[str, Any]:
        body: dict[str, Any] = await self._call(
            session, "GET", f"{self.settings.referrals_url}/v1/referrals/{referral_id}"
        )
        return body

    async def raise_concern(
        self, session: Session, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        created: dict[str, Any] = await self._call(
            session,
            "POST",
            f"{self.settings.referrals_url}/v1/referrals",
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        return created

    async def act(
        self,
        session: Session,
        referral_id: uuid.UUID,
        action: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A MASH action: acknowledge, rating, decision or feedback (feedback with the form's
        Idempotency-Key, so that a second submission of one form gives it once)."""
        result: dict[str, Any] = await self._call(
            session,
            "POST",
            f"{self.settings.referrals_url}/v1/referrals/{referral_id}/{action}",
            json=body,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else None,
        )
        return result

    # -- inbox ---------------------------------------------------------------------------------

    async def inbox(self, session: Session, **filters: Any) -> list[dict[str, Any]]:
        page = await self._call(
            session,
            "GET",
            f"{self.settings.notifications_url}/v1/inbox",
            params={"limit": 200, **filters},
        )
        items: list[dict[str, Any]] = page["items"]
        return items
