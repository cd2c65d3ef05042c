"""What the timeline API returns (see docs/api.md)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel


class PersonOut(BaseModel):
    person_id: uuid.UUID
    display_name: str
    date_of_birth: date | None
    unborn_expected_date: date | None
    sex: str
    merged_into: uuid.UUID | None = None


class DeadlineOut(BaseModel):
    name: str  # acknowledgement | written_follow_up | decision | feedback | assessment
    due_at: datetime | None
    met_at: datetime | None
    met: bool | None  # None: not due yet, or not yet met


class SourceOut(BaseModel):
    type: str  # referral | contact | consent
    id: uuid.UUID
    reference: str | None
    path: str | None  # the source record on the referrals API, where there is one


class PersonRef(BaseModel):
    person_id: uuid.UUID
    name: str
    relationship: str


class EntryOut(BaseModel):
    entry_id: uuid.UUID
    person_id: uuid.UUID
    whose: str
    relationship: str  # "this person", or the member's relationship to them
    people: list[PersonRef]  # everyone in view the event named
    occurred_at: datetime
    kind: str
    title: str
    summary: str
    agency: str
    organisation_code: str
    who: str | None
    contact: str | None
    rag: str | None
    decision: str | None
    deadlines: list[DeadlineOut]
    source: SourceOut


class TimelineOut(BaseModel):
    person: PersonOut
    household_included: bool
    entries: list[EntryOut]
    count: int
    decision_id: uuid.UUID  # the ledger entry that recorded this read


class FlagOut(BaseModel):
    code: str
    title: str
    explanation: str
    entry_ids: list[uuid.UUID]


class AgencyOut(BaseModel):
    agency: str
    organisation_code: str
    role: str
    name: str | None
    contact: str | None
    last_seen_at: datetime
    current: bool


class MemberOut(BaseModel):
    person_id: uuid.UUID
    display_name: str
    date_of_birth: date | None
    role: str  # child | adult
    relationship: str


class SummaryOut(BaseModel):
    person: PersonOut
    flags: list[FlagOut]
    agencies: list[AgencyOut]
    household: list[MemberOut]
    decision_id: uuid.UUID
