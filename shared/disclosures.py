"""The decision point's contract and the one call other services make before they disclose.

Every disclosure of personal data (a MASH worker opening a timeline, feedback sent to a referrer,
a school notified) asks ``POST /v1/disclosures/decide`` on the consent service first and acts on
the answer. The request carries the fields of the ICO data sharing code's request template (who
asks, about whom, what, to whom, why, on which lawful basis, whether consent was sought and, if
not, why, necessity and proportionality, minimisation); the answer says share or do not share,
on which basis, and where the decision sits in the ledger.

    client = DisclosureClient(settings.consent_url, token=lambda: tokens.current())
    decision = await client.decide(DisclosureRequest(...))
    if decision.decision != "share": ...
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.errors import DomainError
from shared.httpclient import AiohttpPoster, HttpxPoster, Poster, Unreachable
from shared.schemas import RequestModel
from shared.tokens import TokenError

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Rationale = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=4000)]
Slug = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$", max_length=80),
]


class Article6Basis(StrEnum):
    """UK GDPR Article 6(1)."""

    CONSENT = "consent"  # (a)
    CONTRACT = "contract"  # (b)
    LEGAL_OBLIGATION = "legal_obligation"  # (c)
    VITAL_INTERESTS = "vital_interests"  # (d)
    PUBLIC_TASK = "public_task"  # (e)
    LEGITIMATE_INTERESTS = "legitimate_interests"  # (f)


class Article9Condition(StrEnum):
    """UK GDPR Article 9(2): the condition for processing special-category data."""

    EXPLICIT_CONSENT = "explicit_consent"  # (a)
    EMPLOYMENT_SOCIAL_SECURITY = "employment_social_security"  # (b)
    VITAL_INTERESTS = "vital_interests"  # (c)
    LEGAL_CLAIMS = "legal_claims"  # (f)
    SUBSTANTIAL_PUBLIC_INTEREST = "substantial_public_interest"  # (g)
    HEALTH_SOCIAL_CARE = "health_social_care"  # (h)
    PUBLIC_HEALTH = "public_health"  # (i)


class Schedule1Condition(StrEnum):
    """DPA 2018 Schedule 1 (Part 1 for Article 9(2)(b), (h), (i); Part 2 for (g))."""

    EMPLOYMENT_SOCIAL_SECURITY = "part1_para1_employment_social_security"
    HEALTH_SOCIAL_CARE = "part1_para2_health_social_care"
    PUBLIC_HEALTH = "part1_para3_public_health"
    STATUTORY_PURPOSES = "part2_para6_statutory_and_government_purposes"
    PREVENTING_CRIME = "part2_para10_preventing_or_detecting_unlawful_acts"
    SAFEGUARDING = "part2_para18_safeguarding_children_and_individuals_at_risk"


class Paragraph18Reason(StrEnum):
    """DPA 2018 Schedule 1 paragraph 18(2): why the safeguarding condition acts without consent."""

    CONSENT_CANNOT_BE_GIVEN = "consent_cannot_be_given"  # (a)
    CANNOT_REASONABLY_OBTAIN = "cannot_reasonably_be_expected_to_obtain_consent"  # (b)
    WOULD_PREJUDICE_PROTECTION = "obtaining_consent_would_prejudice_protection"  # (c)


#: Article 9 conditions that need a Schedule 1 condition as well (DPA 2018 s.10), and which Part.
NEEDS_SCHEDULE_1: dict[Article9Condition, frozenset[Schedule1Condition]] = {
    Article9Condition.EMPLOYMENT_SOCIAL_SECURITY: frozenset(
        {Schedule1Condition.EMPLOYMENT_SOCIAL_SECURITY}
    ),
    Article9Condition.HEALTH_SOCIAL_CARE: frozenset({Schedule1Condition.HEALTH_SOCIAL_CARE}),
    Article9Condition.PUBLIC_HEALTH: frozenset({Schedule1Condition.PUBLIC_HEALTH}),
    Article9Condition.SUBSTANTIAL_PUBLIC_INTEREST: frozenset(
        {
            Schedule1Condition.STATUTORY_PURPOSES,
            Schedule1Condition.PREVENTING_CRIME,
            Schedule1Condition.SAFEGUARDING,
        }
    ),
}


#: Subjects one request may name: a chronology read names every record of a child and of their
#: household (each referral or contact describes a child afresh), so hundreds are usual.
MAX_SUBJECTS = 2000


class Outcome(StrEnum):
    SHARE = "share"
    DO_NOT_SHARE = "do_not_share"


class Strict(RequestModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Person(Strict):
    name: Text
    role: Text


class Requester(Strict):
    """Who asks (ICO template: the requesting organisation and its contact)."""

    organisation_code: Text
    agency: Slug
    name: Text
    role: Text


class Recipient(Strict):
    """To whom the data would go: an agency, and where known the organisation and the user."""

    agency: Slug
    organisation_code: Text | None = None
    user: Text | None = None


class ConsentStatement(Strict):
    """Whether the requester sought consent and, if not, why (golden rule: record it)."""

    sought: bool
    why_not_sought: Annotated[str, StringConstraints(min_length=5, max_length=2000)] | None = None


class Override(Strict):
    """Sharing despite a refusal or withdrawal of consent: basis, reason and who approved it."""

    basis: Article6Basis
    reason: Rationale
    approved_by: Person | None = None

    @field_validator("basis")
    @classmethod
    def _not_consent(cls, basis: Article6Basis) -> Article6Basis:
        if basis is Article6Basis.CONSENT:
            raise ValueError("a refusal of consent cannot be overridden on the basis of consent")
        return basis


class DisclosureRequest(Strict):
    """The ICO data sharing request template, as the decision point needs it."""

    requester: Requester
    recipient: Recipient
    subject_ids: list[UUID] = Field(min_length=1, max_length=MAX_SUBJECTS)
    data_categories: list[Slug] = Field(min_length=1, max_length=30)
    special_category: bool
    purpose: Slug
    lawful_basis: Article6Basis
    article9_condition: Article9Condition | None = None
    schedule1_condition: Schedule1Condition | None = None
    paragraph18_reason: Paragraph18Reason | None = None
    consent: ConsentStatement
    necessity_and_proportionality: Rationale
    data_minimisation: Rationale
    agreement_id: Slug
    decided_by: Person
    approved_by: Person | None = Field(
        default=None,
        description="A manager's approval, where the partnership's policy requires one",
    )
    override: Override | None = None

    def problems(self) -> list[tuple[str, str]]:
        """What the template requires beyond each field's own type: ``(field, message)`` pairs.

        The decision point refuses a request with any of them (422 naming the fields); a client
        may call this first to fail before the network.
        """
        found: list[tuple[str, str]] = []
        if not self.consent.sought and not self.consent.why_not_sought:
            found.append(
                ("consent.why_not_sought", "is required when consent was not sought: say why")
            )
        if self.special_category and self.article9_condition is None:
            found.append(
                ("article9_condition", "is required when special-category data is involved")
            )
        if self.article9_condition is not None:
            allowed = NEEDS_SCHEDULE_1.get(self.article9_condition)
            if allowed is not None and self.schedule1_condition is None:
                found.append(
                    (
                        "schedule1_condition",
                        "is required with article9_condition "
                        f"{self.article9_condition.value} (DPA 2018 s.10)",
                    )
                )
            elif allowed is not None and self.schedule1_condition not in allowed:
                found.append(
                    (
                        "schedule1_condition",
                        f"does not go with article9_condition {self.article9_condition.value}",
                    )
                )
        if (
            self.schedule1_condition is Schedule1Condition.SAFEGUARDING
            and self.paragraph18_reason is None
        ):
            found.append(
                (
                    "paragraph18_reason",
                    "is required with the paragraph 18 condition: which of its three reasons "
                    "for acting without consent applies",
                )
            )
        if len(set(self.subject_ids)) != len(self.subject_ids):
            found.append(("subject_ids", "must not name a subject twice"))
        return found


class DisclosureDecision(BaseModel):
    """The answer, as recorded in the ledger."""

    model_config = ConfigDict(frozen=True)

    decision_id: UUID
    decision: Outcome
    lawful_basis: Article6Basis | None
    article9_condition: Article9Condition | None
    schedule1_condition: Schedule1Condition | None
    consent_status: str
    consent_overridden: bool
    reasons: list[str]
    agreement_id: str
    withdrawals_applied: list[UUID]
    ledger_sequence: int
    ledger_hash: str
    decided_at: datetime


class DecisionPointError(Exception):
    """The decision point refused the request (4xx) or could not answer (5xx, network)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail', problem)}")
        self.status = status
        self.problem = problem


class DisclosureRefused(DomainError):
    """The decision point decided not to share: 403, with the decision's reasons."""

    status_code = 403
    title = "Forbidden"


class DecisionUnavailable(DomainError):
    """No decision could be had: 503, and nothing is disclosed (never a silent share)."""

    status_code = 503
    title = "Service unavailable"


def unanswered(error: DecisionPointError, *, asker: str, unavailable: str) -> DecisionUnavailable:
    """The 503 for a request the decision point did not answer. A 4xx other than 401, 403 and
    429 means the asking service's own request or configuration was wrong, and says so with the
    decision point's detail; anything else is ``unavailable``, the caller's words for what did
    not happen."""
    if 400 <= error.status < 500 and error.status not in (401, 403, 429):
        detail = error.problem.get("detail", error.problem)
        return DecisionUnavailable(
            f"The consent service refused the {asker}'s disclosure request ({detail}). "
            f"{unavailable}"
        )
    return DecisionUnavailable(
        f"The consent service's decision point could not be asked. {unavailable}"
    )


TokenSource = Callable[[], Awaitable[str]]
#: The one call, as a service holds it (a ``DisclosureClient.decide``; tests pass the consent
#: app's own client).
Decide = Callable[[DisclosureRequest], Awaitable[DisclosureDecision]]


class DisclosureClient:
    """Asks the consent service's decision point. A service that cannot get an answer must not
    disclose: every failure raises ``DecisionPointError``, never a silent "share"."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
    ) -> None:
        """``http``: an httpx client to ask through (tests bind one to the consent app in
        process); by default an aiohttp session to ``base_url`` (``shared/httpclient.py``)."""
        self._token = token
        self._http: Poster = (
            HttpxPoster(http)
            if http is not None
            else AiohttpPoster(base_url=base_url, timeout=timeout)
        )

    async def decide(self, request: DisclosureRequest) -> DisclosureDecision:
        try:
            token = await self._token()
        except TokenError as error:  # no token, no question: the same as no answer
            raise DecisionPointError(503, {"detail": f"no token to ask with: {error}"}) from error
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            reply = await self._http.post(
                "/v1/disclosures/decide", request.model_dump_json().encode(), headers
            )
        except Unreachable as error:
            detail = f"decision point unreachable: {error}"
            raise DecisionPointError(503, {"detail": detail}) from error
        if reply.status != 200:
            try:
                problem = json.loads(reply.body)
            except ValueError:
                problem = {"detail": reply.body[:500].decode("utf-8", "replace")}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)[:500]}
            raise DecisionPointError(reply.status, problem)
        try:
            return DisclosureDecision.model_validate_json(reply.body)
        except ValueError as error:
            raise DecisionPointError(
                502, {"detail": f"the decision point's answer does not parse: {error}"}
            ) from error

    async def aclose(self) -> None:
        await self._http.aclose()
