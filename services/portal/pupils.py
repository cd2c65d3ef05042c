"""The DSL's notifications about their pupils (issue 7's page, issue 8's messages): the police's
Operation Encompass notices and what follows them, each acknowledged by the DSL.

Its own router and templates beside the other pages; everything comes from the notifications
API with the DSL's own token, so the API decides what they may see (their school's only).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal.api import Apis
from services.portal.endpoints import ApisDep, DslSession, render
from services.portal.sessions import Session

router = APIRouter()

#: The kinds of message about pupils that the page lists.
ABOUT_PUPILS = ("encompass.notice", "consent.withdrawn")


async def _messages(apis: Apis, session: Session, kind: str) -> list[dict[str, Any]]:
    url = f"{apis.settings.notifications_url}/v1/messages"
    found = await apis._call(
        session, "GET", url, params={"box": "inbox", "kind": kind, "limit": 200}
    )
    return list(found["items"])


@router.get("/notifications", response_class=HTMLResponse)
async def pupil_notifications(request: Request, session: DslSession, apis: ApisDep) -> Response:
    notices = [m for kind in ABOUT_PUPILS for m in await _messages(apis, session, kind)]
    waiting = sorted(
        (m for m in notices if m["acknowledge_by"] and not m["acknowledged_at"]),
        key=lambda m: m["acknowledge_by"],
    )
    seen = sorted(
        (m for m in notices if m not in waiting), key=lambda m: m["created_at"], reverse=True
    )
    now = datetime.now(UTC).isoformat()
    return render(
        request,
        "pupils/notifications.html",
        {"waiting": waiting, "seen": seen, "now": now},
    )


@router.get("/notifications/{message_id}", response_class=HTMLResponse)
async def pupil_notification(
    request: Request, message_id: uuid.UUID, session: DslSession, apis: ApisDep
) -> Response:
    url = f"{apis.settings.notifications_url}/v1/messages/{message_id}"
    message = await apis._call(session, "GET", url)
    return render(
        request,
        "pupils/notification.html",
        {
            "message": message,
            "paragraphs": [p for p in message["body"].split("\n\n") if p.strip()],
            "acknowledged": "acknowledged" in request.query_params,
        },
    )


@router.post("/notifications/{message_id}/acknowledge")
async def acknowledge(message_id: uuid.UUID, session: DslSession, apis: ApisDep) -> Response:
    url = f"{apis.settings.notifications_url}/v1/messages/{message_id}/acknowledge"
    await apis._call(session, "POST", url, json={"acknowledged_by": session.person.name})
    return RedirectResponse(f"/notifications/{message_id}?acknowledged=1", status_code=303)
