"""MASH: the records that record linking was not sure about. Each pair is shown side by side with
what each field says for and against ("Are these the same child?"), and a person answers: the
same child (the linking API merges them) or different children (kept apart). A wrong "same"
is undone on the person's page."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal import display, wording
from services.portal.api import ApiError, Apis
from services.portal.endpoints import ApisDep, FormValues, MashSession, render
from services.portal.sessions import Session
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

PER_PAGE = 5
ANSWERS = {"same": "accept", "different": "reject"}


def _reviews(apis: Apis) -> str:
    return f"{apis.settings.linking_url}/v1/reviews"


@router.get("/mash/links", response_class=HTMLResponse)
async def review_queue(request: Request, session: MashSession, apis: ApisDep) -> Response:
    page = _page_number(request.query_params.get("page"))
    answered = request.query_params.get("show")
    if answered in ANSWERS:
        return await _answered_page(request, session, apis, answered, page)
    done = request.query_params.get("done")
    return await _queue_page(request, session, apis, page, done=done if done in ANSWERS else None)


@router.post("/mash/links/{review_id}", response_class=HTMLResponse)
async def answer(
    request: Request, review_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    posted = await request.form()
    given = str(posted.get("answer") or "")
    note = str(posted.get("note") or "").strip()
    page = _page_number(str(posted.get("page") or ""))
    field = f"answer-{review_id}"
    problem = None
    if given not in ANSWERS:
        problem = "Select whether these are the same child"
    elif len(note) > 2000:
        problem = "The note must be 2,000 characters or fewer"
    else:
        try:
            await apis.post(
                session, f"{_reviews(apis)}/{review_id}/{ANSWERS[given]}", {"note": note or None}
            )
        except ApiError as error:
            if error.status != 409:
                raise
            problem = "Someone else has already answered this one"
        else:
            log.info("portal.link_reviewed", review_id=str(review_id), answer=given)
            return RedirectResponse(f"/mash/links?page={page}&done={given}", status_code=303)
    return await _queue_page(
        request,
        session,
        apis,
        page,
        errors={field: problem},
        values=FormValues({field: given, f"note-{review_id}": note}),
        status_code=400,
    )


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isdigit() and 0 < int(value) < 10_000 else 1


async def _queue_page(
    request: Request,
    session: Session,
    apis: Apis,
    page: int,
    *,
    done: str | None = None,
    errors: dict[str, str] | None = None,
    values: FormValues | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    listed = await apis.get(
        session, _reviews(apis), status="open", limit=PER_PAGE, offset=(page - 1) * PER_PAGE
    )
    errors = errors or {}
    return render(
        request,
        "mash/links.html",
        {
            "pairs": [_pair(item) for item in listed["items"]],
            "total": listed["total"],
            "page": page,
            "pages": max(1, -(-listed["total"] // PER_PAGE)),
            "first": (page - 1) * PER_PAGE + 1,
            "done": done,
            "errors": errors,
            "error_list": [{"text": text, "href": f"#{field}"} for field, text in errors.items()],
            "values": values or FormValues(),
        },
        status_code=status_code,
    )


def _pair(item: dict[str, Any]) -> dict[str, Any]:
    """A review item as the page shows it: both records' values field by field, and what each
    comparison found, for or against."""
    one, other = item["record"], item["candidate_record"] or {}
    child = one.get("role") == "child" and other.get("role", "child") == "child"
    evidence = {e["comparison"]: e for e in item["evidence"]}
    rows = []
    for comparison, label, fields in wording.COMPARED:
        found = evidence.get(comparison, {"level": None, "weight": 0.0})
        strength, colour = wording.evidence_strength(
            found["weight"] if found["level"] is not None else None, child
        )
        rows.append(
            {
                "label": label,
                "one": _values(one, fields),
                "other": _values(other, fields),
                "level": found["level"],
                "strength": strength,
                "colour": colour,
            }
        )
    noun = ("child", "children") if child else ("person", "people")
    return {
        **item,
        "rows": rows,
        "one": one,
        "other": other,
        "question": f"Are these the same {noun[0]}?",
        "answers": (f"Yes, the same {noun[0]}", f"No, different {noun[1]}"),
    }


def _values(record: dict[str, Any], fields: tuple[str, ...]) -> str:
    shown = []
    for name in fields:
        value = record.get(name)
        if not value:
            continue
        if name == "other_names":
            shown.append("also " + ", ".join(value))
        elif name == "expected_date":
            shown.append(f"not born yet: due {display.day(value)}")
        elif name == "date_of_birth":
            shown.append(display.day(value) + (" (a guess)" if record.get("dob_estimated") else ""))
        elif name == "sex":
            shown.append(wording.SEX.get(value, value))
        else:
            shown.append(str(value))
    return "; ".join(shown)


async def _answered_page(
    request: Request, session: Session, apis: Apis, answer: str, page: int
) -> HTMLResponse:
    status = {"same": "accepted", "different": "rejected"}[answer]
    listed = await apis.get(
        session, _reviews(apis), status=status, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
    )
    return render(
        request,
        "mash/links_answered.html",
        {
            "answer": answer,
            "pairs": [_pair(item) for item in listed["items"]],
            "total": listed["total"],
            "page": page,
            "pages": max(1, -(-listed["total"] // PER_PAGE)),
        },
    )
