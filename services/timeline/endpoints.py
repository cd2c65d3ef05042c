"""The timeline API for MASH staff: a person's chronology (with their household), its summary
(flags, agencies involved), the genogram and a printable chronology. Scope ``mash:triage``; each
read is a disclosure, decided by the consent service and recorded (``access.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from services.timeline import access, genogram, reads
from services.timeline.schemas import (
    AgencyOut,
    FlagOut,
    MemberOut,
    PersonOut,
    SummaryOut,
    TimelineOut,
)
from services.timeline.settings import TimelineSettings
from shared.auth import Principal, require_scope
from shared.disclosures import DisclosureClient, DisclosureDecision, DisclosureRefused
from shared.errors import DomainError, NotFound
from shared.schemas import IsoDate
from shared.service import ClockDep, SessionDep, runtime_of

MASH_SCOPE = "mash:triage"
T = TypeVar("T")
router = APIRouter(prefix="/v1", tags=["timeline"])
Mash = Annotated[Principal, Depends(require_scope(MASH_SCOPE))]
RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "The consent service's decision was not to share; `detail` says why"},
    404: {"description": "No such person"},
    503: {"description": "The decision point could not be asked; nothing is shown"},
}
Kind = Literal[
    "referral",
    "referral_acknowledged",
    "referral_rated",
    "referral_decided",
    "referral_feedback",
    "referral_reopened",
    "assessment_completed",
    "deadline_missed",
    "domestic_abuse_incident",
    "unscheduled_care",
    "school_attendance",
    "child_protection_plan",
    "looked_after",
    "consent_withdrawn",
]
Agency = Literal["school", "health", "police", "local_authority", "mash", "consent"]
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


class BadFilter(DomainError):
    status_code = 422
    title = "Unprocessable content"


def _settings(request: Request) -> TimelineSettings:
    settings: TimelineSettings = request.app.state.settings
    return settings


def _client(request: Request) -> DisclosureClient:
    client: DisclosureClient = request.app.state.disclosures
    return client


@dataclass
class Disclosed(Generic[T]):
    scope: reads.Scope
    rows: list[Any]
    decision_id: uuid.UUID
    prepared: T
    #: How long each step took, as an HTTP ``Server-Timing`` header: where a slow read went.
    server_timing: str


async def _disclose(
    request: Request,
    session: SessionDep,
    principal: Principal,
    person_id: uuid.UUID,
    action: str,
    prepare: Callable[[reads.Scope, list[Any]], Awaitable[T]],
    *,
    household: bool,
    filters: reads.Filters | None = None,
    with_entries: bool = True,
    facts: bool = True,
    one_per_event: bool = False,
) -> Disclosed[T]:
    """Ask the decision point about everyone in view and, while it answers, read and prepare
    the response (``prepare``): the decision is a round trip to another process and a ledger
    append, so waiting for it before reading would add its whole time to every read. Nothing
    prepared leaves this process unless the answer is share: a refusal, an error or no answer
    discards it. The read is logged with the decision either way.

    A read with no merge in view (most) takes three steps that overlap: the first look
    (``reads.look``) names everyone and their subjects; then the decision point is asked, the
    entries are read on a connection of their own, and the people are read on this one. A
    merge anywhere in view takes the general way: the scope, the subjects, then the entries."""
    settings = _settings(request)
    steps: dict[str, float] = {}
    started = time.perf_counter()
    pending: list[asyncio.Task[Any]] = []

    async def deciding(
        subjects: list[uuid.UUID],
    ) -> tuple[bool, list[DisclosureDecision], str | None]:
        began = time.perf_counter()
        try:
            return await access.decide(_client(request), principal, subjects, settings)
        finally:
            steps["decision"] = time.perf_counter() - began

    async def reading(own: AsyncSession, ids: list[uuid.UUID]) -> list[Any]:
        if not with_entries:
            return []
        return await reads.entry_rows(
            own, ids, filters or reads.Filters(), facts=facts, one_per_event=one_per_event
        )

    async def reading_apart(ids: list[uuid.UUID]) -> list[Any]:
        if not with_entries:
            return []
        async with runtime_of(request).database.transaction() as own:
            return await reading(own, ids)

    try:
        first = await reads.look(session, person_id)
        if first.simple:
            # No merge in view: the first look named everyone, so the decision point is asked
            # and the entries are read (on a connection of their own) while the people are.
            subjects = first.subjects(household)
            if not subjects:
                raise NotFound(f"nothing is recorded about person {person_id} yet")
            asking = asyncio.create_task(deciding(subjects))
            pending.append(asking)
            entries = asyncio.create_task(reading_apart(first.ids(household)))
            pending.append(entries)
            found: reads.Scope | None = await reads.assemble(session, first)
            assert found is not None
            mark = steps["scope"] = time.perf_counter() - started
            rows = await entries
        else:
            found = await reads.scope(session, person_id, include_household=household)
            if found is None:
                raise NotFound(f"no person {person_id} in the timeline")
            ids = found.canonical_ids(household)
            subjects = await reads.subject_ids(session, ids)
            if not subjects:
                raise NotFound(f"nothing is recorded about person {person_id} yet")
            asking = asyncio.create_task(deciding(subjects))
            pending.append(asking)
            mark = steps["scope"] = time.perf_counter() - started
            rows = await reading(session, ids)
        steps["rows"] = time.perf_counter() - started - mark
        mark += steps["rows"]
        prepared = await prepare(found, rows)
        steps["prepare"] = time.perf_counter() - started - mark
        mark += steps["prepare"]
    except BaseException:
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*pending, return_exceptions=True)
        raise
    share, decisions, reason = await asking
    steps["waited"] = time.perf_counter() - started - mark
    last = decisions[-1].decision_id if decisions else None
    if not share:
        del prepared, rows
        # recorded in its own transaction: the refusal must be logged though the request fails
        async with runtime_of(request).database.transaction() as own:
            await access.record(own, principal, action, person_id, "refused", last, reason)
        raise DisclosureRefused(f"not shared: {reason}", decision_id=str(last))
    await access.record(session, principal, action, person_id, "allowed", last)
    assert last is not None
    steps["total"] = time.perf_counter() - started
    timing = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in steps.items())
    return Disclosed(found, rows, last, prepared, timing)


async def _nothing(scope: reads.Scope, rows: list[Any]) -> None:
    return None


def _person(view: reads.PersonView) -> PersonOut:
    return PersonOut(
        person_id=view.person_id,
        display_name=view.display_name,
        date_of_birth=view.date_of_birth,
        unborn_expected_date=view.unborn_expected_date,
        sex=view.sex,
        merged_into=view.merged_into,
    )


@router.get(
    "/persons/{person_id}/timeline",
    response_model=TimelineOut,
    responses=RESPONSES,
    summary="A person's chronology, optionally with their household's beside it",
)
async def timeline(
    person_id: uuid.UUID,
    request: Request,
    reader: Mash,
    session: SessionDep,
    date_from: Annotated[IsoDate | None, Query(alias="from", description="YYYY-MM-DD")] = None,
    date_to: Annotated[
        IsoDate | None, Query(alias="to", description="YYYY-MM-DD, inclusive")
    ] = None,
    agency: Annotated[list[Agency] | None, Query(description="one or more")] = None,
    kind: Annotated[list[Kind] | None, Query(description="one or more")] = None,
    include: Annotated[Literal["household"] | None, Query()] = None,
) -> TimelineOut:
    if date_from and date_to and date_to < date_from:
        raise BadFilter(
            "to must not be before from", errors=[{"field": "to", "message": "is before from"}]
        )
    household = include == "household"
    filters = reads.Filters(date_from, date_to, tuple(agency or ()), tuple(kind or ()))

    async def entries_json(scope: reads.Scope, rows: list[Any]) -> tuple[int, orjson.Fragment]:
        entries = reads.entries_out(rows, scope, household=household)
        return len(entries), orjson.Fragment(orjson.dumps(entries, default=str))

    disclosed = await _disclose(
        request,
        session,
        reader,
        person_id,
        "timeline",
        entries_json,
        household=household,
        filters=filters,
        facts=False,  # the chronology shows no facts; the summary's flags read them
        one_per_event=household,
    )
    count, entries = disclosed.prepared
    # Built as TimelineOut declares it, and serialised straight to JSON: validating hundreds of
    # entries through the response model cost more than reading them (tests check the shape).
    body = {
        "person": _person(disclosed.scope.person).model_dump(),
        "household_included": household,
        "entries": entries,
        "count": count,
        "decision_id": disclosed.decision_id,
    }
    return Response(  # type: ignore[return-value]
        orjson.dumps(body, default=str),
        media_type="application/json",
        headers={"Server-Timing": disclosed.server_timing},
    )


@dataclass
class _Findings:
    flags: list[FlagOut]
    agencies: list[AgencyOut]
    entries: list[dict[str, Any]] | None


async def _summary(
    request: Request,
    session: SessionDep,
    reader: Principal,
    person_id: uuid.UUID,
    now: Any,
    *,
    with_entries_out: bool = False,
) -> tuple[Disclosed[_Findings], SummaryOut]:
    async def findings(scope: reads.Scope, rows: list[Any]) -> _Findings:
        flags = reads.flags(rows, scope, _settings(request))
        agencies = await reads.agencies(session, rows, scope, now)
        return _Findings(
            [FlagOut.model_validate(flag, from_attributes=True) for flag in flags],
            [AgencyOut.model_validate(agency) for agency in agencies],
            reads.entries_out(rows, scope, household=True) if with_entries_out else None,
        )

    disclosed = await _disclose(
        request, session, reader, person_id, "summary", findings, household=True
    )
    scope = disclosed.scope
    return disclosed, SummaryOut(
        person=_person(scope.person),
        flags=disclosed.prepared.flags,
        agencies=disclosed.prepared.agencies,
        household=[
            MemberOut(
                person_id=m.person.person_id,
                display_name=m.person.display_name,
                date_of_birth=m.person.date_of_birth,
                role=m.role,
                relationship=m.relationship,
            )
            for m in scope.members
        ],
        decision_id=disclosed.decision_id,
    )


@router.get(
    "/persons/{person_id}/summary",
    response_model=SummaryOut,
    responses=RESPONSES,
    summary="Pattern flags (explained), agencies involved and the household",
)
async def summary(
    person_id: uuid.UUID,
    request: Request,
    response: Response,
    reader: Mash,
    session: SessionDep,
    clock: ClockDep,
) -> SummaryOut:
    disclosed, out = await _summary(request, session, reader, person_id, clock.now())
    response.headers["Server-Timing"] = disclosed.server_timing
    return out


@router.get(
    "/persons/{person_id}/genogram.svg",
    response_class=Response,
    responses={**RESPONSES, 200: {"content": {"image/svg+xml": {}}}},
    summary="The household as a family tree (SVG)",
)
async def genogram_svg(
    person_id: uuid.UUID, request: Request, reader: Mash, session: SessionDep
) -> Response:
    disclosed = await _disclose(
        request,
        session,
        reader,
        person_id,
        "genogram",
        _nothing,
        household=True,
        with_entries=False,  # the tree needs the household, not the entries
    )
    return Response(
        genogram.render(disclosed.scope),
        media_type="image/svg+xml",
        headers={"Cache-Control": "no-store", "Server-Timing": disclosed.server_timing},
    )


@router.get(
    "/persons/{person_id}/chronology.html",
    response_class=HTMLResponse,
    responses=RESPONSES,
    summary="A printable chronology for a strategy meeting (household, flags, agencies, tree)",
)
async def chronology_html(
    person_id: uuid.UUID, request: Request, reader: Mash, session: SessionDep, clock: ClockDep
) -> HTMLResponse:
    now = clock.now()
    disclosed, out = await _summary(request, session, reader, person_id, now, with_entries_out=True)
    entries = disclosed.prepared.entries
    html = TEMPLATES.get_template("chronology.html").render(
        summary=out,
        entries=entries,
        genogram=genogram.render(disclosed.scope),
        printed_at=now,
        printed_by=reader.subject,
        organisation=reader.organisation_code,
    )
    return HTMLResponse(
        html, headers={"Cache-Control": "no-store", "Server-Timing": disclosed.server_timing}
    )
