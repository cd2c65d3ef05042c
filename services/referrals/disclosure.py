"""Feedback to a referrer is a disclosure, so the consent service's decision point decides it.

"Record the decision and the reasons, whether you share or not" (the seventh golden rule of
information sharing). When a MASH worker records feedback, the referrals service asks the
decision point whether the MASH may tell the referrer's organisation what is being done about
the children of the referral (purpose ``referral_feedback``), before anything is stored:

- **share**: the feedback is recorded with the decision's id (``disclosure_decision_id``), the
  referrer reads it through the API and is told by the notifications service;
- **do not share** (a parent's or competent child's withdrawal of consent that covers it, or a
  request outside the information sharing agreement): 403 with the decision's reasons and its id,
  and nothing is stored; the ledger holds the refusal. An ``override`` with its basis, reason
  and (by policy) a manager's approval asks again;
- **no answer** (the consent service is down or unreachable): 503, nothing stored, never a
  silent share.

The decision is asked before the referral is locked, so a slow decision point never holds a
MASH worker's row lock. If storing then fails (the referral was reopened in between, the
database went away), the ledger keeps a decision for feedback that was not given: it may record
more than was disclosed, never less.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.auth import Principal
from shared.disclosures import (
    Article6Basis,
    Article9Condition,
    ConsentStatement,
    Decide,
    DecisionPointError,
    DisclosureDecision,
    DisclosureRefused,
    DisclosureRequest,
    Outcome,
    Override,
    Paragraph18Reason,
    Person,
    Recipient,
    Requester,
    Schedule1Condition,
    unanswered,
)
from shared.errors import DomainError
from shared.logging import get_logger

log = get_logger(__name__)

PURPOSE = "referral_feedback"
DATA_CATEGORIES = ["referral_outcome", "referral_feedback"]
WHY_NOT_SOUGHT = (
    "Telling the professional who made a referral what is being done about it is part of the "
    "safeguarding process they started (Working Together 2023); the family's consent to the "
    "referral, or why it was not asked, was recorded when the referral was made."
)
NECESSITY = (
    "The referrer keeps working with the child and must know what the MASH is doing, or they "
    "cannot support the child or follow up when nothing happens (Derby: 'if you do not receive "
    "feedback … follow this up')."
)
MINIMISATION = (
    "The type of response and the MASH worker's feedback to this referrer only: not the MASH's "
    "rating, its reasons or anything learned from other agencies' records."
)


@dataclass(frozen=True)
class Referrer:
    """Who the feedback goes to, and about whom: what the request needs of the referral."""

    reference: str
    agency: str
    organisation_code: str
    name: str
    children: tuple[uuid.UUID, ...]


class FeedbackRequestRefused(DomainError):
    status_code = 422
    title = "The request is not valid"


def request_for(
    principal: Principal,
    referrer: Referrer,
    *,
    given_by: str,
    agreement_id: str,
    override: Override | None,
) -> DisclosureRequest:
    worker = f"{principal.agency} worker"
    return DisclosureRequest(
        requester=Requester(
            organisation_code=principal.organisation_code,
            agency=principal.agency,
            name=given_by,
            role=worker,
        ),
        recipient=Recipient(
            agency=referrer.agency,
            organisation_code=referrer.organisation_code,
            user=referrer.name,
        ),
        subject_ids=list(referrer.children),
        data_categories=DATA_CATEGORIES,
        # Feedback is free text about a safeguarding concern: it can touch health, sex life or
        # ethnicity, so it is asked as special-category data on the safeguarding condition.
        special_category=True,
        purpose=PURPOSE,
        lawful_basis=Article6Basis.PUBLIC_TASK,
        article9_condition=Article9Condition.SUBSTANTIAL_PUBLIC_INTEREST,
        schedule1_condition=Schedule1Condition.SAFEGUARDING,
        paragraph18_reason=Paragraph18Reason.CANNOT_REASONABLY_OBTAIN,
        consent=ConsentStatement(sought=False, why_not_sought=WHY_NOT_SOUGHT),
        necessity_and_proportionality=NECESSITY,
        data_minimisation=MINIMISATION,
        agreement_id=agreement_id,
        decided_by=Person(name=given_by, role=worker),
        override=override,
    )


async def decide_feedback(
    decide: Decide,
    principal: Principal,
    referrer: Referrer,
    *,
    given_by: str,
    agreement_id: str,
    override: Override | None,
) -> DisclosureDecision:
    """The decision to share, or the refusal as a 403 / 422 / 503 the MASH worker can act on."""
    request = request_for(
        principal, referrer, given_by=given_by, agreement_id=agreement_id, override=override
    )
    try:
        decision = await decide(request)
    except DecisionPointError as error:
        log.warning("referrals.feedback_decision_failed", status=error.status)
        problem = error.problem
        errors = problem.get("errors") or []
        fields = [str(e.get("field", "")) for e in errors if isinstance(e, dict)]
        if error.status == 422 and fields and all(f.startswith("override") for f in fields):
            # The MASH worker's own part of the request, the override, is incomplete (e.g. the
            # manager's approval the partnership's policy requires): theirs to put right.
            raise FeedbackRequestRefused(
                str(problem.get("detail", "the override is not complete")), errors=errors
            ) from error
        raise unanswered(
            error,
            asker="referrals service",
            unavailable="The feedback was not recorded or sent; try again shortly.",
        ) from error
    if decision.decision != Outcome.SHARE:
        reasons = "; ".join(decision.reasons) or "the decision was not to share"
        raise DisclosureRefused(
            f"The feedback may not be shared with {referrer.organisation_code}: {reasons}. "
            "Nothing was recorded or sent. To share despite a refusal or withdrawal of consent, "
            "give an override with its basis, reason and a manager's approval.",
            decision_id=str(decision.decision_id),
            reasons=decision.reasons,
        )
    return decision
