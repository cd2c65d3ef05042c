"""Events the linking service emits (see docs/events.md and docs/linking.md).

They carry ids, methods and probabilities, never names or dates of birth: a downstream read
model (the MASH timeline) needs to know which person a subject is, not what the agency wrote.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.events import Event, Topic


class SubjectLinked(
    Event, type="subject.linked", topic=Topic.LINKING, key="person_id", producer="linking"
):
    """A subject of a referral or contact (a person record) was resolved to a person."""

    record_id: UUID
    subject_id: UUID | None = None
    person_id: UUID
    method: str  # nhs_number | upn | probabilistic | review_accepted | new_person | ...
    match_probability: float
    review_pending: bool = False
    source_type: str  # referral | contact
    source_id: UUID | None = None
    linked_at: datetime
    decided_by: str  # "linking" for automatic links, else the person who decided


class LinkReviewRequired(
    Event,
    type="link.review_required",
    topic=Topic.LINKING,
    key="review_id",
    producer="linking",
):
    """A record may be a person already held: the MASH must accept or reject the link."""

    review_id: UUID
    record_id: UUID
    subject_id: UUID | None = None
    record_person_id: UUID
    candidate_person_id: UUID
    match_probability: float
    created_at: datetime


class LinkReviewDecided(
    Event,
    type="link.review_decided",
    topic=Topic.LINKING,
    key="review_id",
    producer="linking",
):
    """A person accepted or rejected a candidate link from the review queue."""

    review_id: UUID
    record_id: UUID
    candidate_person_id: UUID
    decision: str  # accepted | rejected
    decided_by: str
    decided_at: datetime


class PersonsMerged(
    Event,
    type="persons.merged",
    topic=Topic.LINKING,
    key="survivor_person_id",
    producer="linking",
):
    """Two persons were found to be one: every record of the merged one now belongs to the
    survivor. Read models re-project the merged person's history onto the survivor."""

    merge_id: UUID
    survivor_person_id: UUID
    merged_person_id: UUID
    record_ids: list[UUID]
    reason: str
    merged_by: str
    merged_at: datetime


class PersonsUnmerged(
    Event,
    type="persons.unmerged",
    topic=Topic.LINKING,
    key="survivor_person_id",
    producer="linking",
):
    """A merge was undone: the records it moved belong to the restored person again."""

    merge_id: UUID
    survivor_person_id: UUID
    restored_person_id: UUID
    record_ids: list[UUID]
    reason: str
    unmerged_by: str
    unmerged_at: datetime


class HouseholdMember(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    person_id: UUID
    role: str  # child | adult


class RelationshipOut(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    person_id: UUID
    related_person_id: UUID
    kind: str
    parental_responsibility: bool | None = None
    lives_with: bool | None = None
    inferred: bool = False


class HouseholdUpdated(
    Event,
    type="household.updated",
    topic=Topic.LINKING,
    key="household_id",
    producer="linking",
):
    """A household's members or their relationships changed (the whole current picture)."""

    household_id: UUID
    members: list[HouseholdMember]
    relationships: list[RelationshipOut]
    updated_at: datetime
