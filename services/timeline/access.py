"""Access is a disclosure: every read of a chronology asks the consent service's decision point
(purpose: MASH triage), which records the decision in the ledger, and the read is logged here
with that decision. A refused decision is a 403 with the reason; no answer is a 503, never a
silent "share"."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.timeline.models import SCHEMA
from services.timeline.settings import TimelineSettings
from shared.auth import Principal
from shared.disclosures import (
    MAX_SUBJECTS,
    Article6Basis,
    Article9Condition,
    ConsentStatement,
    DecisionPointError,
    DisclosureClient,
    DisclosureDecision,
    DisclosureRequest,
    Outcome,
    Paragraph18Reason,
    Person,
    Recipient,
    Requester,
    Schedule1Condition,
    unanswered,
)
from shared.logging import get_logger

log = get_logger(__name__)

DATA_CATEGORIES = ["safeguarding_chronology", "household_relationships"]
NECESSITY = (
    "A MASH worker triaging a concern must see the child's earlier contacts and their "
    "siblings' beside the new one, or a fourth contact is read as a first (Star Hobson review)."
)
MINIMISATION = (
    "Summaries of each contact and its outcome only: no narratives, no child's own words; "
    "household entries only where the household view is asked for."
)
WHY_NOT_SOUGHT = (
    "Reading the chronology is part of deciding, within one working day, whether the child "
    "is at risk; asking the family first could delay or prejudice that."
)


def request_for(
    principal: Principal,
    subjects: Sequence[uuid.UUID],
    settings: TimelineSettings,
) -> DisclosureRequest:
    me = Person(name=principal.subject[:200], role=f"{principal.agency} worker")
    return DisclosureRequest(
        requester=Requester(
            organisation_code=principal.organisation_code,
            agency=principal.agency,
            name=principal.subject[:200],
            role=f"{principal.agency} worker",
        ),
        recipient=Recipient(
            agency=principal.agency,
            organisation_code=principal.organisation_code,
            user=principal.subject[:200],
        ),
        subject_ids=list(subjects),
        data_categories=DATA_CATEGORIES,
        special_category=True,
        purpose=settings.purpose,
        lawful_basis=Article6Basis.PUBLIC_TASK,
        article9_condition=Article9Condition.SUBSTANTIAL_PUBLIC_INTEREST,
        schedule1_condition=Schedule1Condition.SAFEGUARDING,
        paragraph18_reason=Paragraph18Reason.WOULD_PREJUDICE_PROTECTION,
        consent=ConsentStatement(sought=False, why_not_sought=WHY_NOT_SOUGHT),
        necessity_and_proportionality=NECESSITY,
        data_minimisation=MINIMISATION,
        agreement_id=settings.agreement_id,
        decided_by=me,
    )


_LOG = text(
    f"INSERT INTO {SCHEMA}.access_log (principal, organisation_code, action, person_id, outcome,"
    " decision_id, reason) VALUES (:principal, :organisation, :action, :person, :outcome,"
    " :decision, :reason)"
)


async def record(
    session: AsyncSession,
    principal: Principal,
    action: str,
    person_id: uuid.UUID,
    outcome: str,
    decision_id: uuid.UUID | None,
    reason: str | None = None,
) -> None:
    await session.execute(
        _LOG,
        {
            "principal": principal.subject[:200],
            "organisation": principal.organisation_code[:40],
            "action": action,
            "person": person_id,
            "outcome": outcome,
            "decision": decision_id,
            "reason": reason,
        },
    )


async def decide(
    client: DisclosureClient,
    principal: Principal,
    subjects: Sequence[uuid.UUID],
    settings: TimelineSettings,
) -> tuple[bool, list[DisclosureDecision], str | None]:
    """Ask about every subject in view (in as many requests as the cap needs); share only if
    every answer is share."""
    decisions = []
    ordered = sorted(set(subjects))
    for start in range(0, len(ordered), MAX_SUBJECTS):
        chunk = ordered[start : start + MAX_SUBJECTS]
        try:
            decision = await client.decide(request_for(principal, chunk, settings))
        except DecisionPointError as error:
            log.warning("timeline.decision_point_failed", status=error.status)
            raise unanswered(
                error,
                asker="timeline",
                unavailable="The chronology is not shown; try again shortly.",
            ) from error
        decisions.append(decision)
        if decision.decision != Outcome.SHARE:
            return False, decisions, "; ".join(decision.reasons) or "the decision was not to share"
    return True, decisions, None
