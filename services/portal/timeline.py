"""MASH: a child's linked timeline, from the timeline service. One chronology of every agency's
contacts with the child and, beside them, their household's (each labelled with whose it is);
the pattern flags explained; the agencies involved and how to reach them; the genogram; and
the printable chronology for a strategy meeting.

Every read is a disclosure: the timeline service asks the consent service's decision point
with the person's own token and records it. A read the decision point refuses is a 403 whose
``detail`` gives the reason, shown to the person in plain words.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal import forms
from services.portal.api import ApiError, Apis
from services.portal.endpoints import ApisDep, FormValues, MashSession, render
from services.portal.sessions import Session
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

KINDS = {
    "referral": "Referrals",
    "referral_acknowledged": "Referral acknowledged",
    "referral_rated": "Referral rated",
    "referral_decided": "Decision on a referral",
    "referral_feedback": "Feedback to the person who raised it",
    "referral_reopened": "Referral reopened",
    "assessment_completed": "Assessment finished",
    "deadline_missed": "A deadline missed",
    "domestic_abuse_incident": "Police: domestic abuse",
    "unscheduled_care": "Health: A&E and urgent care",
    "school_attendance": "School attendance",
    "child_protection_plan": "Child protection plan",
    "looked_after": "Looked after",
    "consent_withdrawn": "Consent withdrawn",
}
AGENCIES = {
    "school": "Schools",
    "health": "Health",
    "police": "Police",
    "local_authority": "Children's services",
    "mash": "MASH",
    "consent": "Consent records",
}
DEADLINES = {
    "acknowledgement": "Acknowledge",
    "written_follow_up": "Confirm in writing",
    "decision": "Decide",
    "feedback": "Tell the referrer",
    "assessment": "Finish the assessment",
}
FILTER_ORDER = ["from", "to", "agency", "kind"]
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def _timeline(apis: Apis) -> str:
    return f"{apis.settings.timeline_url}/v1/persons"


class Refused(Exception):
    """The consent service's decision point said not to share this chronology."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


async def _read(session: Session, apis: Apis, path: str, **params: Any) -> Any:
    try:
        return await apis.get(session, f"{_timeline(apis)}/{path}", **params)
    except ApiError as error:
        if error.status == 403 and error.detail.startswith("not shared"):
            raise Refused(error.detail.removeprefix("not shared:").strip()) from error
        raise


@router.get("/mash/people/{person_id}/timeline", response_class=HTMLResponse)
async def child_timeline(
    request: Request, person_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    query = request.query_params
    values = FormValues({k: v.strip() for k, v in query.items()})
    errors = forms.FormErrors()
    since = forms.date_value(query, "from", errors, "The start date must be a real date")
    until = forms.date_value(query, "to", errors, "The end date must be a real date")
    if since and until and until < since:
        errors.add("to", "The end date must be the same as or after the start date")
    agencies = [a for a in query.getlist("agency") if a in AGENCIES]
    kind = values.get("kind") if values.get("kind") in KINDS else None
    household = "filtered" not in query or query.get("household") == "yes"
    filters = {
        "from": since,
        "to": until,
        "agency": agencies or None,
        "kind": kind,
        "include": "household" if household else None,
    }
    context: dict[str, Any] = {
        "person_id": person_id,
        "values": values,
        "chosen_agencies": agencies,
        "household": household,
        "filtered": "filtered" in query,
        "kinds": KINDS,
        "agencies": AGENCIES,
        "errors": errors.by_field,
        "error_list": errors.summary(FILTER_ORDER),
    }
    try:
        summary = await _read(session, apis, f"{person_id}/summary")
        chronology = (
            None if errors else await _read(session, apis, f"{person_id}/timeline", **filters)
        )
    except Refused as refused:
        log.info("portal.timeline_refused", person_id=str(person_id))
        return render(
            request,
            "mash/timeline_refused.html",
            {**context, "reason": refused.reason},
            status_code=403,
        )
    if summary["person"].get("merged_into"):  # a person since joined to another: go there
        return RedirectResponse(
            f"/mash/people/{summary['person']['person_id']}/timeline", status_code=303
        )
    flagged = {entry_id: flag for flag in summary["flags"] for entry_id in flag["entry_ids"]}
    return render(
        request,
        "mash/timeline.html",
        {
            **context,
            "summary": summary,
            "chronology": chronology,
            "entries": list(reversed(chronology["entries"])) if chronology else [],
            "flagged": flagged,
            "deadline_names": DEADLINES,
        },
        status_code=400 if errors else 200,
    )


@router.get("/mash/people/{person_id}/genogram.svg")
async def genogram(person_id: uuid.UUID, session: MashSession, apis: ApisDep) -> Response:
    try:
        drawn = await apis.download(session, f"{_timeline(apis)}/{person_id}/genogram.svg")
    except ApiError as error:
        if error.status in {403, 404}:
            return Response(status_code=error.status)
        raise
    return Response(drawn.content, media_type="image/svg+xml")


@router.get("/mash/people/{person_id}/chronology", response_class=HTMLResponse)
async def printable_chronology(
    request: Request, person_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    """The timeline service's printable chronology as it made it. Its own <style> is allowed by
    hash, nothing else: no scripts, no other sources."""
    try:
        printed = await apis.download(session, f"{_timeline(apis)}/{person_id}/chronology.html")
    except ApiError as error:
        if error.status == 403 and error.detail.startswith("not shared"):
            reason = error.detail.removeprefix("not shared:").strip()
            return render(
                request,
                "mash/timeline_refused.html",
                {"person_id": person_id, "reason": reason},
                status_code=403,
            )
        raise
    document = printed.text
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
        for css in _STYLE.findall(document)
    )
    styles = hashes or "'none'"
    policy = (
        f"default-src 'none'; style-src {styles}; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    log.info("portal.chronology_printed", person_id=str(person_id))
    return HTMLResponse(document, headers={"Content-Security-Policy": policy})


# -- from a referral to its children's timelines ---------------------------------------------


@router.get("/mash/referrals/{referral_id}/timeline", response_class=HTMLResponse)
async def referral_timelines(
    request: Request, referral_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    """The timeline of each child of a referral. Linking knows each child as a person; the
    referral knows them by subject id, so the child's person is found by resolving what the
    referral says about them and keeping the candidate that holds this very subject."""
    referral = await apis.referral(session, referral_id)
    children = referral["children"]
    found = await asyncio.gather(*(_person_of(session, apis, child) for child in children))
    if len(children) == 1 and found[0] is not None:
        return RedirectResponse(f"/mash/people/{found[0]}/timeline", status_code=303)
    return render(
        request,
        "mash/referral_children.html",
        {
            "referral": referral,
            "children": [
                {**child, "person_id": person_id}
                for child, person_id in zip(children, found, strict=True)
            ],
        },
    )


async def _person_of(session: Session, apis: Apis, child: dict[str, Any]) -> str | None:
    record = {
        "given_names": child.get("given_names"),
        "family_name": child.get("family_name"),
        "other_names": child.get("other_names") or [],
        "date_of_birth": child.get("date_of_birth"),
        "unborn_expected_date": child.get("unborn_expected_date"),
        "sex": child.get("sex") if child.get("sex") in {"female", "male"} else "not_known",
        "postcode": child.get("postcode"),
        "nhs_number": child.get("nhs_number"),
        "upn": child.get("upn"),
    }
    linking = f"{apis.settings.linking_url}/v1/persons"
    try:
        resolved = await apis.post(
            session, f"{linking}/resolve", {k: v for k, v in record.items() if v}
        )
    except ApiError as error:
        if error.status == 422:
            return None
        raise
    for candidate in resolved["candidates"][:3]:
        person = await apis.get(session, f"{linking}/{candidate['person_id']}")
        if any(r["subject_id"] == child["subject_id"] for r in person["records"]):
            return str(person["merged_into"] or person["id"])
    return None
