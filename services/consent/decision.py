"""The decision itself: pure, synchronous, no I/O (the ledger writer feeds it what it needs).

"Where possible, share information with consent, and where possible, respect the wishes of
those who do not consent to having their information shared. Under the GDPR and Data Protection
Act 2018 you may share information without consent if, in your judgement, there is a lawful basis
to do so" (Salford). So:

1. The request must fall within the information sharing agreement it names; else do not share.
2. Each subject's consent is looked up: the records that cover these categories, this recipient
   and this purpose, and have not expired. A competent child's own records govern that child;
   otherwise every person with parental responsibility counts. Any refusal or withdrawal makes
   the consent status refused / withdrawn; else any consent given makes it given; else a record
   that consent was not sought gives not_sought; else not_recorded.
3. Refused or withdrawn: share only with an override (basis, reason and, by policy, a manager's
   approval, checked before this point); otherwise do not share.
4. Given: share on the requested basis.
5. Not sought or not recorded: share on the requested basis unless that basis is consent (or the
   Article 9 condition is explicit consent), which cannot stand without a consent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from services.consent.agreements import ANY, Agreement
from shared.disclosures import Article6Basis, Article9Condition, DisclosureRequest, Outcome

GIVEN = "given"
REFUSED = "refused"
WITHDRAWN = "withdrawn"
NOT_SOUGHT = "not_sought"
NOT_RECORDED = "not_recorded"
#: The more of these, the more restrictive; a request's status is its subjects' most restrictive.
RESTRICTIVENESS = {NOT_RECORDED: 0, NOT_SOUGHT: 1, GIVEN: 2, REFUSED: 3, WITHDRAWN: 4}


@dataclass(frozen=True)
class ConsentView:
    """What the decision needs of one consent record."""

    id: uuid.UUID
    subject_id: uuid.UUID
    grantor_kind: str
    child_competent: bool | None
    status: str
    data_categories: tuple[str, ...]
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]
    obtained_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None

    def covers(self, request: DisclosureRequest, now: datetime) -> bool:
        if self.obtained_at > now:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        categories = set(self.data_categories)
        if ANY not in categories and not categories & set(request.data_categories):
            return False
        if ANY not in self.recipients and request.recipient.agency not in self.recipients:
            return False
        return ANY in self.purposes or request.purpose in self.purposes


@dataclass(frozen=True)
class SubjectConsent:
    subject_id: uuid.UUID
    status: str
    consent_ids: tuple[uuid.UUID, ...]
    governed_by_competent_child: bool


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    lawful_basis: Article6Basis | None
    consent_status: str
    consent_overridden: bool
    reasons: list[str]
    # The subjects with a record of consent, each with its status; those with none are only
    # counted (most of a household chronology's hundreds).
    subjects: list[SubjectConsent]
    withdrawals_applied: list[uuid.UUID] = field(default_factory=list)
    unrecorded: int = 0


def subject_consent(
    subject_id: uuid.UUID, records: list[ConsentView], request: DisclosureRequest, now: datetime
) -> SubjectConsent:
    if not records:  # most subjects of a household's chronology read
        return SubjectConsent(subject_id, NOT_RECORDED, (), False)
    covering = [record for record in records if record.covers(request, now)]
    competent_child = [
        record
        for record in covering
        if record.grantor_kind == "child" and record.child_competent and record.status != NOT_SOUGHT
    ]
    governing = competent_child or covering
    if not governing:
        return SubjectConsent(subject_id, NOT_RECORDED, (), False)
    status = max((record.status for record in governing), key=RESTRICTIVENESS.__getitem__)
    return SubjectConsent(
        subject_id,
        status,
        tuple(record.id for record in governing if record.status == status),
        bool(competent_child),
    )


def _whose(subject: SubjectConsent) -> str:
    return "the competent child's consent" if subject.governed_by_competent_child else "consent"


def decide(
    request: DisclosureRequest,
    agreement: Agreement,
    consents: dict[uuid.UUID, list[ConsentView]],
    now: datetime,
) -> Verdict:
    subjects = []
    unrecorded = 0
    for subject_id in request.subject_ids:
        records = consents.get(subject_id)
        if records:
            subjects.append(subject_consent(subject_id, records, request, now))
        else:
            unrecorded += 1
    status = max(
        [s.status for s in subjects] + ([NOT_RECORDED] if unrecorded else []),
        key=RESTRICTIVENESS.__getitem__,
    )
    verdict = partial(Verdict, unrecorded=unrecorded)
    withdrawals = sorted(
        {consent_id for s in subjects if s.status == WITHDRAWN for consent_id in s.consent_ids}
    )
    outside = agreement.refusal(
        request.requester.agency,
        request.recipient.agency,
        request.purpose,
        list(request.data_categories),
        now.date(),
    )
    if outside is not None:
        return verdict(
            Outcome.DO_NOT_SHARE, None, status, False, [outside], subjects, list(withdrawals)
        )
    if status in (REFUSED, WITHDRAWN):
        who = ", ".join(
            f"{s.subject_id} ({_whose(s)} {s.status}: {', '.join(str(i) for i in s.consent_ids)})"
            for s in subjects
            if s.status == status
        )
        if request.override is None:
            return verdict(
                Outcome.DO_NOT_SHARE,
                None,
                status,
                False,
                [f"consent {status} for {who}; no override was made"],
                subjects,
                list(withdrawals),
            )
        return verdict(
            Outcome.SHARE,
            request.override.basis,
            status,
            True,
            [
                f"consent {status} for {who}, overridden on the basis "
                f"{request.override.basis.value}: {request.override.reason}"
            ],
            subjects,
            list(withdrawals),
        )
    needs_consent = (
        request.lawful_basis is Article6Basis.CONSENT
        or request.article9_condition is Article9Condition.EXPLICIT_CONSENT
    )
    if status == GIVEN:
        return verdict(
            Outcome.SHARE,
            request.lawful_basis,
            status,
            False,
            ["consent given for every subject and covers this disclosure"],
            subjects,
        )
    if needs_consent:
        return verdict(
            Outcome.DO_NOT_SHARE,
            None,
            status,
            False,
            [
                "the request relies on consent, but no consent covering this disclosure is "
                "recorded for every subject"
            ],
            subjects,
        )
    why = request.consent.why_not_sought or "consent was sought but is not recorded"
    return verdict(
        Outcome.SHARE,
        request.lawful_basis,
        status,
        False,
        [
            f"shared without consent on the basis {request.lawful_basis.value} under agreement "
            f"{agreement.id}; consent not sought because: {why}"
        ],
        subjects,
    )
