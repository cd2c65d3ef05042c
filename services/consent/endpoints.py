"""The consent HTTP API under /v1: the decision point, consent records, and the DPO's views.

The decision point and consent writes go through the ledger writer (group commit): the writer's
transaction decides, records and commits before the answer is returned. The DPO's reads run in
the request's transaction, which also records the read.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import Field
from sqlalchemy import Row

from services.consent import export, integrity, service
from services.consent.agreements import Agreements
from services.consent.models import ConsentRecord, LedgerVerification
from services.consent.repository import DecisionFilter, LedgerRepository, Paging
from services.consent.schemas import (
    CheckpointStatus,
    ConsentCreate,
    ConsentOut,
    IntegrityOut,
    LedgerEntryOut,
    LedgerPage,
    RetentionRunOut,
    RetentionRunsOut,
    SubjectExport,
    VerificationOut,
    WithdrawalIn,
    WithdrawalOut,
)
from services.consent.writer import LedgerWriter
from shared.auth import Principal, require_scope
from shared.disclosures import DisclosureDecision, DisclosureRequest
from shared.errors import DomainError, NotFound
from shared.schemas import MAX_BIGINT, IsoDateTime, Offset, QueryText
from shared.service import ClockDep, SessionDep

router = APIRouter(prefix="/v1", tags=["consent"])

DECIDE_SCOPE = "disclosures:decide"
DELEGATE_SCOPE = "disclosures:delegate"  # platform services asking on an agency's behalf
WRITE_SCOPE = "consent:write"
AUDIT_SCOPE = "consent:audit"

Asker = Annotated[Principal, Depends(require_scope(DECIDE_SCOPE))]
Recorder = Annotated[Principal, Depends(require_scope(WRITE_SCOPE))]
Auditor = Annotated[Principal, Depends(require_scope(AUDIT_SCOPE))]
ConsentReader = Annotated[Principal, Depends(require_scope(WRITE_SCOPE, AUDIT_SCOPE))]
PageSize = Annotated[int, Query(ge=1, le=500)]


async def _writer(request: Request) -> LedgerWriter:
    writer: LedgerWriter = request.app.state.ledger_writer
    return writer


WriterDep = Annotated[LedgerWriter, Depends(_writer)]


class NotYours(DomainError):
    status_code = 403
    title = "Forbidden"


def entry_out(row: Row[Any]) -> LedgerEntryOut:
    return LedgerEntryOut(
        sequence=row.sequence,
        entry_id=row.entry_id,
        kind=row.kind,
        recorded_at=row.recorded_at,
        subject_ids=list(row.subject_ids),
        from_agency=row.from_agency,
        to_agency=row.to_agency,
        purpose=row.purpose,
        lawful_basis=row.lawful_basis,
        outcome=row.outcome,
        consent_status=row.consent_status,
        payload=row.payload,
        hash=bytes(row.hash).hex(),
        prev_hash=bytes(row.prev_hash).hex(),
    )


LedgerKind = Literal[
    "consent.recorded", "consent.withdrawn", "disclosure.decided", "retention.expired"
]


@router.post(
    "/disclosures/decide",
    summary="May this be disclosed? Decide, record the decision in the ledger, answer",
    response_model=DisclosureDecision,
)
async def decide(body: DisclosureRequest, principal: Asker, request: Request) -> Response:
    # The writer and the agreements straight from the app, not as dependencies: each dependency
    # is solved per request, and this is the hot path of every disclosure in the partnership.
    writer: LedgerWriter = request.app.state.ledger_writer
    agreements: Agreements = request.app.state.agreements
    if not principal.has(DELEGATE_SCOPE) and (
        body.requester.agency != principal.agency
        or body.requester.organisation_code != principal.organisation_code
    ):
        raise NotYours(
            "requester.agency and requester.organisation_code must be the caller's own "
            f"({principal.agency}, {principal.organisation_code}); asking for another "
            f"organisation needs the scope {DELEGATE_SCOPE}"
        )
    agreement = service.check_request(body, agreements, principal)
    result: DisclosureDecision = await writer.submit(service.Decide(body, agreement, principal))
    # Serialised here, once: the hot path of every disclosure in the partnership.
    return Response(result.model_dump_json(), media_type="application/json")


@router.post(
    "/consents",
    status_code=status.HTTP_201_CREATED,
    summary="Record a consent, a refusal, or that consent was not sought (and why)",
)
async def record_consent(
    body: ConsentCreate, principal: Recorder, writer: WriterDep, response: Response, clock: ClockDep
) -> ConsentOut:
    problems: list[tuple[str, str]] = []
    if body.grantor_kind == "child" and body.child_competent is None:
        problems.append(("child_competent", "is required when the child is the grantor"))
    if body.status == "not_sought" and not body.why_not_sought:
        problems.append(("why_not_sought", "is required when consent was not sought"))
    if body.obtained_at.tzinfo is None:
        problems.append(("obtained_at", "must carry a time zone"))
    elif body.obtained_at > clock.now():
        problems.append(("obtained_at", "must not be in the future"))
    if body.expires_at is not None and body.expires_at <= body.obtained_at:
        problems.append(("expires_at", "must be after obtained_at"))
    if problems:
        raise service.InvalidRequest(problems)
    details = service.ConsentDetails(
        subject_id=body.subject_id,
        grantor_kind=body.grantor_kind,
        grantor_subject_id=body.subject_id
        if body.grantor_kind == "child"
        else body.grantor_subject_id,
        grantor_description=body.grantor_description,
        child_competent=body.child_competent,
        status=body.status,
        data_categories=tuple(body.data_categories),
        recipients=tuple(body.recipients),
        purposes=tuple(body.purposes),
        obtained_how=body.obtained_how,
        obtained_at=body.obtained_at,
        obtained_by_name=body.obtained_by.name,
        obtained_by_role=body.obtained_by.role,
        obtained_by_organisation=f"{principal.agency} {principal.organisation_code}",
        evidence_reference=body.evidence_reference,
        why_not_sought=body.why_not_sought,
        expires_at=body.expires_at,
        source="api",
        source_id=principal.subject,
    )
    records: list[ConsentRecord] = await writer.submit(service.RecordConsents((details,)))
    response.headers["Location"] = f"/v1/consents/{records[0].id}"
    return ConsentOut.model_validate(records[0])


@router.post("/consents/{consent_id}/withdraw", summary="Withdraw a consent")
async def withdraw_consent(
    consent_id: uuid.UUID, body: WithdrawalIn, principal: Recorder, writer: WriterDep
) -> ConsentOut:
    if body.withdrawn_at is not None and body.withdrawn_at.tzinfo is None:
        raise service.InvalidRequest([("withdrawn_at", "must carry a time zone")])
    record: ConsentRecord = await writer.submit(
        service.Withdraw(consent_id, body.withdrawn_by, body.reason, body.withdrawn_at, principal)
    )
    return ConsentOut.model_validate(record)


@router.get("/consents/{consent_id}", summary="One consent record")
async def read_consent(
    consent_id: uuid.UUID, principal: ConsentReader, session: SessionDep
) -> ConsentOut:
    repository = LedgerRepository(session)
    record = await repository.consent(consent_id)
    if record is None:
        raise NotFound(f"no consent record {consent_id}")
    await repository.record_access(
        principal, "read_consent", {"consent_id": str(consent_id)}, record.subject_id
    )
    return ConsentOut.model_validate(record)


# The data-protection officer


def decision_filter(
    subject_id: uuid.UUID | None = None,
    agency: Annotated[QueryText | None, Query(description="Either end of the disclosure")] = None,
    from_agency: QueryText | None = None,
    to_agency: QueryText | None = None,
    purpose: QueryText | None = None,
    lawful_basis: QueryText | None = None,
    outcome: str | None = Query(default=None, pattern="^(share|do_not_share)$"),
    consent_status: QueryText | None = None,
    without_consent: bool = Query(
        default=False, description="Only disclosures made without a consent given"
    ),
    overridden: bool = Query(default=False, description="Only overrides of a refusal"),
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
) -> DecisionFilter:
    return DecisionFilter(
        subject_id=subject_id,
        agency=agency,
        from_agency=from_agency,
        to_agency=to_agency,
        purpose=purpose,
        lawful_basis=lawful_basis,
        outcome=outcome,
        consent_status=consent_status,
        without_consent=without_consent,
        overridden=overridden,
        since=since,
        until=until,
    )


def paging(
    after_sequence: Offset | None = None,
    newest_first: bool = Query(
        default=False, description="Newest first, paged by before_sequence (default: oldest first)"
    ),
    before_sequence: Annotated[int, Field(ge=1, le=MAX_BIGINT)] | None = Query(
        default=None, description="With newest_first"
    ),
    limit: PageSize = 100,
) -> Paging:
    return Paging(limit, after_sequence, before_sequence, newest_first)


FilterDep = Annotated[DecisionFilter, Depends(decision_filter)]
PagingDep = Annotated[Paging, Depends(paging)]


async def _ledger_page(
    session: SessionDep, principal: Principal, where: DecisionFilter, paging: Paging, action: str
) -> LedgerPage:
    repository = LedgerRepository(session)
    rows = await repository.entries(where, paging)
    query = {k: str(v) for k, v in where.__dict__.items() if v not in (None, False)}
    await repository.record_access(principal, action, query, where.subject_id)
    more = rows[-1].sequence if len(rows) == paging.limit else None
    return LedgerPage(
        items=[entry_out(row) for row in rows],
        next_after_sequence=None if paging.newest_first else more,
        next_before_sequence=more if paging.newest_first else None,
    )


@router.get("/dpo/decisions", summary="Disclosure decisions, filtered", tags=["dpo"])
async def list_decisions(
    principal: Auditor, session: SessionDep, where: FilterDep, paging: PagingDep
) -> LedgerPage:
    where = replace(where, kind="disclosure.decided")
    return await _ledger_page(session, principal, where, paging, "list_decisions")


@router.get("/dpo/ledger", summary="Ledger entries of every kind, filtered", tags=["dpo"])
async def list_ledger(
    principal: Auditor,
    session: SessionDep,
    where: FilterDep,
    paging: PagingDep,
    kind: LedgerKind | None = None,
) -> LedgerPage:
    where = replace(where, kind=kind)
    return await _ledger_page(session, principal, where, paging, "list_ledger")


@router.get(
    "/dpo/withdrawals",
    summary="Withdrawals of consent and the later decisions each one changed",
    tags=["dpo"],
)
async def list_withdrawals(
    principal: Auditor,
    session: SessionDep,
    paging: PagingDep,
    subject_id: uuid.UUID | None = None,
) -> list[WithdrawalOut]:
    repository = LedgerRepository(session)
    withdrawals = await repository.withdrawals(subject_id, paging)
    found = [
        WithdrawalOut(
            withdrawal=entry_out(row),
            later_decisions_changed=[
                entry_out(changed) for changed in await repository.decisions_changed_by(row)
            ],
        )
        for row in withdrawals
    ]
    await repository.record_access(
        principal, "list_withdrawals", {"subject_id": str(subject_id)}, subject_id
    )
    return found


@router.get("/dpo/integrity", summary="Is the ledger intact?", tags=["dpo"])
async def ledger_integrity(
    principal: Auditor,
    session: SessionDep,
    request: Request,
    full: bool = Query(
        default=False,
        description="Recompute the whole chain (default: from the newest valid checkpoint)",
    ),
) -> IntegrityOut:
    settings = request.app.state.settings
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    result = await integrity.verify(
        raw.driver_connection,
        Path(settings.checkpoint_dir),
        request.app.state.checkpoint_public_key,
        since_last_checkpoint=not full,
    )
    repository = LedgerRepository(session)
    await repository.record_access(principal, "integrity", {"full": str(full)})
    first = result.first_broken
    checked_at = datetime.now(UTC)
    await repository.record_verification(
        LedgerVerification(
            verified_at=checked_at,
            verified_by=principal.subject,
            scope="full" if result.scope == "full" else "since_last_checkpoint",
            intact=result.intact,
            entries_checked=result.chain.entries_checked,
            head_sequence=result.chain.last_sequence,
            first_broken_sequence=None if first is None else first[0],
            problem=None if first is None else first[1],
            checkpoints_checked=len(result.checkpoints),
            seconds=round(result.seconds, 3),
        )
    )
    return IntegrityOut(
        intact=result.intact,
        scope="full" if result.scope == "full" else "since_last_checkpoint",
        entries_checked=result.chain.entries_checked,
        head_sequence=result.chain.last_sequence,
        head_hash=result.chain.last_hash.hex(),
        first_broken_sequence=None if first is None else first[0],
        problem=None if first is None else first[1],
        checkpoints=[
            CheckpointStatus(
                sequence=r.checkpoint.sequence,
                hash=r.checkpoint.hash,
                signed_at=r.checkpoint.signed_at,
                signature_valid=r.signature_valid,
                matches_ledger=r.matches_ledger,
                problem=r.problem,
            )
            for r in result.checkpoints[-20:]
        ],
        checked_at=checked_at,
        seconds=round(result.seconds, 3),
    )


@router.get(
    "/dpo/verifications",
    summary="The latest verifications of the ledger made through the API, newest first",
    tags=["dpo"],
)
async def list_verifications(
    principal: Auditor, session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[VerificationOut]:
    repository = LedgerRepository(session)
    found = await repository.verifications(limit)
    await repository.record_access(principal, "list_verifications", {"limit": str(limit)})
    return [VerificationOut.model_validate(verification) for verification in found]


@router.get(
    "/dpo/retention-runs",
    summary="The retention policy in force and the job's latest runs, newest first",
    tags=["dpo"],
)
async def list_retention_runs(
    principal: Auditor,
    session: SessionDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RetentionRunsOut:
    repository = LedgerRepository(session)
    runs = await repository.retention_runs(limit)
    await repository.record_access(principal, "list_retention_runs", {"limit": str(limit)})
    return RetentionRunsOut(
        policy=request.app.state.retention_policy.describe(),
        runs=[RetentionRunOut.model_validate(run) for run in runs],
    )


async def _export(
    subject_id: uuid.UUID, principal: Principal, session: SessionDep, action: str
) -> SubjectExport:
    repository = LedgerRepository(session)
    result = SubjectExport(
        subject_id=subject_id,
        exported_at=datetime.now(UTC),
        consent_records=[
            ConsentOut.model_validate(record) for record in await repository.consents(subject_id)
        ],
        ledger_entries=[entry_out(row) for row in await repository.about_subject(subject_id)],
        case_subject_of=[
            {
                "referral_id": str(row.referral_id),
                "role": row.role,
                "received_at": row.received_at.isoformat(),
            }
            for row in await repository.case_subject_rows(subject_id)
        ],
        retention_actions=[
            {
                "record_type": row.record_type,
                "expired_at": row.expired_at.isoformat(),
                "ledger_sequence": row.ledger_sequence,
            }
            for row in await repository.retention_actions(subject_id)
        ],
        note=export.NOTE,
    )
    await repository.record_access(principal, action, {}, subject_id)
    return result


@router.get(
    "/dpo/subjects/{subject_id}/export",
    summary="Subject access export: everything the consent service holds about a person (JSON)",
    tags=["dpo"],
)
async def export_subject(
    subject_id: uuid.UUID, principal: Auditor, session: SessionDep
) -> SubjectExport:
    return await _export(subject_id, principal, session, "export_json")


@router.get(
    "/dpo/subjects/{subject_id}/export.html",
    summary="Subject access export as a readable document",
    response_class=HTMLResponse,
    tags=["dpo"],
)
async def export_subject_html(
    subject_id: uuid.UUID, principal: Auditor, session: SessionDep
) -> HTMLResponse:
    return HTMLResponse(export.render(await _export(subject_id, principal, session, "export_html")))
