"""MASH: find a child across every agency's records, and see one person as record linking holds
them: each agency's record and how it was linked, their family, the joins and their undoing.

The search is a POST: names and dates of birth stay out of addresses, browser history and
logs. Every read goes to the linking API with the person's own token (scope ``mash:triage``),
which records each person it discloses.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal import forms, wording
from services.portal.api import ApiError, Apis
from services.portal.endpoints import ApisDep, FormValues, MashSession, render
from services.portal.sessions import Session
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

SEARCH_ORDER = ["given_names", "family_name", "date_of_birth", "postcode", "nhs_number", "upn"]
#: Related people whose names the person page reads (each read is recorded by linking).
MAX_RELATED = 20


def _linking(apis: Apis) -> str:
    return f"{apis.settings.linking_url}/v1"


@router.get("/mash/people", response_class=HTMLResponse)
async def find_a_child(request: Request, session: MashSession) -> Response:
    return _search_page(request, FormValues(), forms.FormErrors(), None)


@router.post("/mash/people", response_class=HTMLResponse)
async def search(request: Request, session: MashSession, apis: ApisDep) -> Response:
    posted = await request.form()
    values = FormValues({k: v.strip() for k, v in posted.items() if isinstance(v, str)})
    errors = forms.FormErrors()
    born = forms.date_value(
        posted, "date_of_birth", errors, "Date of birth must be a real date, like 27 3 2016"
    )
    query = {
        "given_names": values.get("given_names") or None,
        "family_name": values.get("family_name") or None,
        "date_of_birth": born,
        "postcode": values.get("postcode") or None,
        "nhs_number": values.get("nhs_number") or None,
        "upn": values.get("upn") or None,
    }
    if not errors and not any(query[k] for k in SEARCH_ORDER if k != "postcode"):
        errors.add("given_names", "Enter a name, a date of birth, an NHS number or a pupil number")
    found: list[dict[str, Any]] | None = None
    if not errors:
        try:
            # No ``limit``: linking's search refuses any parameter outside its record fields
            # (its query model forbids extras), so it answers its default ten.
            answer = await apis.get(session, f"{_linking(apis)}/persons/search", **query)
        except ApiError as error:
            if error.status != 422:
                raise
            named = [
                {**e, "field": str(e.get("field", "")).removeprefix("query.")} for e in error.errors
            ]
            if not all(e["field"] in SEARCH_ORDER for e in named):
                log.warning("portal.search_refused", detail=error.detail)
                raise ApiError(503, error.detail) from error
            forms.api_errors(named, errors, SEARCH_ORDER)
        else:
            found = answer["persons"]
    return _search_page(request, values, errors, found, status_code=400 if errors else 200)


def _search_page(
    request: Request,
    values: FormValues,
    errors: forms.FormErrors,
    found: list[dict[str, Any]] | None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "mash/people.html",
        {
            "values": values,
            "errors": errors.by_field,
            "error_list": errors.summary(SEARCH_ORDER),
            "found": found,
        },
        status_code=status_code,
    )


@router.get("/mash/people/{person_id}", response_class=HTMLResponse)
async def person(
    request: Request, person_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    held = await apis.get(session, f"{_linking(apis)}/persons/{person_id}")
    return render(request, "mash/person.html", await _person_context(request, session, apis, held))


async def _person_context(
    request: Request, session: Session, apis: Apis, held: dict[str, Any]
) -> dict[str, Any]:
    me = held["id"]
    others = list(
        dict.fromkeys(
            r["related_person_id"] if r["person_id"] == me else r["person_id"]
            for r in held["relationships"]
        )
    )[:MAX_RELATED]
    names = dict(
        zip(
            others, await asyncio.gather(*(_name_of(session, apis, o) for o in others)), strict=True
        )
    )
    family = []
    for relationship in held["relationships"]:
        theirs = relationship["person_id"] == me
        other = relationship["related_person_id"] if theirs else relationship["person_id"]
        table = wording.RELATIONSHIP_FROM_THEM if theirs else wording.RELATIONSHIP_TO_THEM
        family.append(
            {
                "person_id": other,
                "name": names.get(other, "Not shown"),
                "relationship": table.get(relationship["kind"], relationship["kind"]),
                "parental_responsibility": relationship["parental_responsibility"]
                if not theirs
                else None,
                "lives_with": relationship["lives_with"],
                "inferred": relationship["inferred"],
            }
        )
    joined = {
        record_id: merge
        for merge in held["merges"]
        if merge["unmerged_at"] is None and merge["survivor_person_id"] == me
        for record_id in merge["record_ids"]
    }
    done = request.query_params.get("done")
    return {
        "joined": joined,
        "held": held,
        "name": wording.display_name(held["records"]),
        "dates_of_birth": sorted(
            {r["date_of_birth"] for r in held["records"] if r["date_of_birth"]}
        ),
        "family": family,
        "merges": list(reversed(held["merges"])),
        "history": list(reversed(held["history"])),
        "done": done if done in {"unmerged"} else None,
    }


async def _name_of(session: Session, apis: Apis, person_id: str) -> str:
    try:
        other = await apis.get(session, f"{_linking(apis)}/persons/{person_id}")
    except ApiError as error:
        if error.status in {403, 404}:
            return "Not shown"
        raise
    return wording.display_name(other["records"])


@router.post("/mash/merges/{merge_id}/unmerge", response_class=HTMLResponse)
async def unmerge(
    request: Request, merge_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    posted = await request.form()
    reason = str(posted.get("reason") or "").strip()
    back = str(posted.get("person_id") or "")
    try:
        person_id = uuid.UUID(back)
    except ValueError:
        return RedirectResponse("/mash/people", status_code=303)
    error = None
    if len(reason) < 3:
        error = "Say why these are not the same person"
    else:
        try:
            await apis.post(
                session, f"{_linking(apis)}/merges/{merge_id}/unmerge", {"reason": reason}
            )
        except ApiError as refused:
            if refused.status != 409:
                raise
            error = _unmerge_refusal(refused.detail)
        else:
            log.info("portal.unmerged", merge_id=str(merge_id))
            return RedirectResponse(f"/mash/people/{person_id}?done=unmerged", status_code=303)
    held = await apis.get(session, f"{_linking(apis)}/persons/{person_id}")
    context = await _person_context(request, session, apis, held)
    field = f"reason-{merge_id}"
    context.update(
        errors={field: error},
        error_list=[{"text": error, "href": f"#{field}"}],
        values=FormValues({field: reason}),
    )
    return render(request, "mash/person.html", context, status_code=400)


def _unmerge_refusal(detail: str) -> str:
    if "already" in detail:
        return "This was already undone"
    if "merged" in detail:
        return (
            "This person has since been joined to someone else. Undo that first, on the other "
            "person's page"
        )
    return detail[:1].upper() + detail[1:]
