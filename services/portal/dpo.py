"""The data protection officer's pages over the consent service's ledger: every entry with
filters, disclosures without consent and overrides, withdrawals and what they changed, the
ledger's integrity and its verifications, subject access exports, retention runs.

Every read goes to the consent API with the DPO's own token (scope ``consent:audit``), which
records it in its access log. The DPO sees ledger metadata, never a case narrative: the consent
service holds none.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal import forms, wording
from services.portal.api import Apis
from services.portal.display import LONDON
from services.portal.endpoints import ApisDep, DpoSession, FormValues, problem_page, render
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

PER_PAGE = 50
FILTER_ORDER = [
    "kind",
    "subject_id",
    "agency",
    "purpose",
    "lawful_basis",
    "outcome",
    "consent_status",
    "from",
    "to",
]
#: The choices of each filter: the API's codes with their plain words.
CHOICES = {
    "kind": wording.LEDGER_KIND,
    "agency": {k: v for k, v in wording.AGENCY.items() if k not in {"dpo", "consent"}},
    "purpose": wording.PURPOSE,
    "lawful_basis": wording.LAWFUL_BASIS,
    "outcome": {"share": "Shared", "do_not_share": "Not shared"},
    "consent_status": wording.CONSENT_STATUS,
}
DISCLOSURE_VIEWS = {
    "without_consent": "Shared without consent",
    "overridden": "Shared although consent was refused or withdrawn",
}


def _consent(apis: Apis) -> str:
    return f"{apis.settings.consent_url}/v1/dpo"


def _before(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


# -- overview ----------------------------------------------------------------------------------


@router.get("/dpo", response_class=HTMLResponse)
async def overview(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    verifications = await apis.get(session, f"{_consent(apis)}/verifications", limit=1)
    without = await apis.get(
        session,
        f"{_consent(apis)}/decisions",
        without_consent="true",
        newest_first="true",
        limit=5,
    )
    retention = await apis.get(session, f"{_consent(apis)}/retention-runs", limit=1)
    return render(
        request,
        "dpo/overview.html",
        {
            "verification": verifications[0] if verifications else None,
            "without_consent": without["items"],
            "retention_run": retention["runs"][0] if retention["runs"] else None,
        },
    )


# -- the ledger --------------------------------------------------------------------------------


@router.get("/dpo/ledger", response_class=HTMLResponse)
async def ledger(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    query = request.query_params
    values = FormValues({k: v.strip() for k, v in query.items()})
    errors = forms.FormErrors()
    params: dict[str, Any] = {}
    for name, choices in CHOICES.items():
        if values.get(name) and values.get(name) not in choices:
            errors.add(name, "Select one of the choices")
        elif values.get(name):
            params[name] = values.get(name)
    if values.get("subject_id"):
        subject = _uuid(values.get("subject_id"))
        if subject is None:
            errors.add("subject_id", "Enter the person's reference as it is shown in the ledger")
        params["subject_id"] = subject
    since = forms.date_value(query, "from", errors, "The start date must be a real date")
    until = forms.date_value(query, "to", errors, "The end date must be a real date")
    if since and until and until < since:
        errors.add("to", "The end date must be the same as or after the start date")
    if errors:
        return _ledger_page(request, values, errors, None, status_code=400)
    page = await apis.get(
        session,
        f"{_consent(apis)}/ledger",
        **params,
        since=_start_of(since),
        until=_start_of(until, days=1),
        newest_first="true",
        before_sequence=_before(request),
        limit=PER_PAGE,
    )
    return _ledger_page(request, values, errors, page)


def _ledger_page(
    request: Request,
    values: FormValues,
    errors: forms.FormErrors,
    page: dict[str, Any] | None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    kept = [(k, v) for k, v in request.query_params.items() if k != "before" and v]
    return render(
        request,
        "dpo/ledger.html",
        {
            "values": values,
            "errors": errors.by_field,
            "error_list": errors.summary(FILTER_ORDER),
            "choices": CHOICES,
            "page": page,
            "filtered": any(k not in {"before"} for k, _ in kept),
            "query": "&".join(f"{k}={v}" for k, v in kept),
            "before": _before(request),
        },
        status_code=status_code,
    )


@router.get("/dpo/ledger/{sequence}", response_class=HTMLResponse)
async def ledger_entry(
    request: Request, sequence: int, session: DpoSession, apis: ApisDep
) -> Response:
    if sequence < 1:
        return await _not_found(request)
    page = await apis.get(session, f"{_consent(apis)}/ledger", after_sequence=sequence - 1, limit=1)
    if not page["items"] or page["items"][0]["sequence"] != sequence:
        return await _not_found(request)
    entry = page["items"][0]
    return render(
        request,
        "dpo/entry.html",
        {"entry": entry, "rows": wording.payload_rows(entry["payload"])},
    )


async def _not_found(request: Request) -> HTMLResponse:
    return problem_page(request, 404, "Page not found", "There is no such entry in the ledger.")


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _start_of(day: str | None, *, days: int = 0) -> str | None:
    """The start of a London day (plus ``days``) as an aware ISO time, for the API's filters."""
    if day is None:
        return None
    moment = datetime.combine(date.fromisoformat(day) + timedelta(days=days), time(), LONDON)
    return moment.isoformat()


# -- disclosures without consent, overrides, withdrawals ---------------------------------------


@router.get("/dpo/disclosures", response_class=HTMLResponse)
async def disclosures(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    view = request.query_params.get("show", "without_consent")
    if view not in DISCLOSURE_VIEWS:
        view = "without_consent"
    page = await apis.get(
        session,
        f"{_consent(apis)}/decisions",
        **{view: "true"},
        newest_first="true",
        before_sequence=_before(request),
        limit=PER_PAGE,
    )
    return render(
        request,
        "dpo/disclosures.html",
        {"view": view, "views": DISCLOSURE_VIEWS, "page": page, "before": _before(request)},
    )


@router.get("/dpo/withdrawals", response_class=HTMLResponse)
async def withdrawals(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    after = request.query_params.get("after", "")
    found = await apis.get(
        session,
        f"{_consent(apis)}/withdrawals",
        after_sequence=int(after) if after.isdigit() else None,
        limit=PER_PAGE,
    )
    return render(
        request,
        "dpo/withdrawals.html",
        {
            "withdrawals": found,
            "next_after": found[-1]["withdrawal"]["sequence"] if len(found) == PER_PAGE else None,
        },
    )


# -- integrity ---------------------------------------------------------------------------------


@router.get("/dpo/integrity", response_class=HTMLResponse)
async def integrity(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    verifications = await apis.get(session, f"{_consent(apis)}/verifications", limit=20)
    checked = request.query_params.get("checked")
    return render(
        request,
        "dpo/integrity.html",
        {
            "verifications": verifications,
            "latest": verifications[0] if verifications else None,
            "last_full": next((v for v in verifications if v["scope"] == "full"), None),
            "checked": checked if checked in {"full", "quick"} else None,
        },
    )


@router.post("/dpo/integrity", response_class=HTMLResponse)
async def check_integrity(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    """Verify now; the consent service records the verification, and the page shows it."""
    posted = await request.form()
    scope = "full" if posted.get("scope") == "full" else "quick"
    result = await apis.get(
        session, f"{_consent(apis)}/integrity", full="true" if scope == "full" else None
    )
    log.info("portal.ledger_verified", scope=scope, intact=result["intact"])
    return RedirectResponse(f"/dpo/integrity?checked={scope}", status_code=303)


# -- subject access ----------------------------------------------------------------------------


@router.get("/dpo/subjects", response_class=HTMLResponse)
async def subject_access(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    typed = request.query_params.get("subject_id", "").strip()
    values = FormValues({"subject_id": typed})
    if not typed:
        return render(request, "dpo/subjects.html", {"values": values, "export": None})
    subject = _uuid(typed)
    if subject is None:
        error = "Enter the person's reference as it is shown in the ledger, like 8d0c1e2f-…"
        return render(
            request,
            "dpo/subjects.html",
            {
                "values": values,
                "export": None,
                "errors": {"subject_id": error},
                "error_list": [{"text": error, "href": "#subject_id"}],
            },
            status_code=400,
        )
    export = await apis.get(session, f"{_consent(apis)}/subjects/{subject}/export")
    return render(request, "dpo/subjects.html", {"values": values, "export": export})


@router.get("/dpo/subjects/{subject_id}/export.{form}")
async def download_export(
    subject_id: uuid.UUID, form: str, session: DpoSession, apis: ApisDep, request: Request
) -> Response:
    if form not in {"json", "html"}:
        return await _not_found(request)
    suffix = "" if form == "json" else ".html"
    answer = await apis.download(session, f"{_consent(apis)}/subjects/{subject_id}/export{suffix}")
    log.info("portal.subject_access_export", subject_id=str(subject_id), form=form)
    return Response(
        answer.content,
        media_type="application/json" if form == "json" else "text/html; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="subject-access-{subject_id}.{form}"'
        },
    )


# -- retention ---------------------------------------------------------------------------------


@router.get("/dpo/retention", response_class=HTMLResponse)
async def retention(request: Request, session: DpoSession, apis: ApisDep) -> Response:
    found = await apis.get(session, f"{_consent(apis)}/retention-runs", limit=30)
    return render(request, "dpo/retention.html", {"policy": found["policy"], "runs": found["runs"]})
