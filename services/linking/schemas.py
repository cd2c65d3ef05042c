"""Request and response models of the linking API (never the ORM models)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.identifiers import UPN, NHSNumber, UKPostcode
from shared.schemas import RequestModel


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"
    NOT_KNOWN = "not_known"


class RecordIn(RequestModel):
    """One record to resolve: what an agency knows of a person (any field may be missing)."""

    model_config = ConfigDict(extra="forbid")

    given_names: str | None = Field(default=None, max_length=200)
    family_name: str | None = Field(default=None, max_length=200)
    other_names: list[str] = Field(default=[], max_length=20)
    date_of_birth: date | None = None
    date_of_birth_estimated: bool = False
    unborn_expected_date: date | None = None
    sex: Sex = Sex.NOT_KNOWN
    address: str | None = Field(default=None, max_length=500)
    postcode: UKPostcode | None = None
    nhs_number: NHSNumber | None = None
    upn: UPN | None = None

    @model_validator(mode="after")
    def _something_to_match(self) -> Self:
        if not any(
            (self.family_name, self.given_names, self.nhs_number, self.upn, self.date_of_birth)
        ):
            raise ValueError(
                "give at least a name, a date of birth, an NHS number or a UPN to match on"
            )
        if self.date_of_birth and self.date_of_birth > date.today():
            raise ValueError(
                "date_of_birth is in the future: for an unborn child use unborn_expected_date"
            )
        return self


class FieldEvidenceOut(BaseModel):
    comparison: str
    level: str | None
    weight: float


class CandidateOut(BaseModel):
    person_id: UUID
    match_probability: float
    match_weight: float
    deterministic: str | None
    conflict: str | None
    evidence: list[FieldEvidenceOut]


class ResolveOut(BaseModel):
    band: str  # link | review | new_person
    method: str
    person_id: UUID | None
    match_probability: float
    reason: str
    candidates: list[CandidateOut]


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    subject_id: UUID | None
    source_type: str
    source_id: UUID | None
    source_reference: str
    source_agency: str
    source_organisation: str
    role: str
    given_names: str | None
    family_name: str | None
    other_names: list[str]
    date_of_birth: date | None
    dob_estimated: bool
    expected_date: date | None
    sex: str | None
    postcode: str | None
    nhs_number: str | None
    upn: str | None
    link_method: str
    match_probability: float
    linked_by: str
    linked_at: datetime


class RelationshipView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    person_id: UUID
    related_person_id: UUID
    kind: str
    parental_responsibility: bool | None
    lives_with: bool | None
    inferred: bool


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    record_id: UUID | None
    person_id: UUID
    previous_person_id: UUID | None
    action: str
    method: str
    match_probability: float | None
    decided_by: str
    reason: str | None
    at: datetime


class MergeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    survivor_person_id: UUID
    merged_person_id: UUID
    record_ids: list[UUID]
    reason: str
    merged_by: str
    merged_at: datetime
    unmerged_at: datetime | None
    unmerged_by: str | None
    unmerge_reason: str | None


class PersonOut(BaseModel):
    id: UUID
    status: str
    merged_into: UUID | None
    records: list[RecordOut]
    relationships: list[RelationshipView]
    households: list[UUID]
    merges: list[MergeOut]
    history: list[HistoryOut]


class PersonSummary(BaseModel):
    person_id: UUID
    match_probability: float
    names: list[str]
    dates_of_birth: list[date]
    postcodes: list[str]
    records: int


class SearchOut(BaseModel):
    persons: list[PersonSummary]


class ReviewOut(BaseModel):
    id: UUID
    record_id: UUID
    record_person_id: UUID
    candidate_person_id: UUID
    match_probability: float
    reason: str
    evidence: list[FieldEvidenceOut]
    status: str
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_note: str | None
    record: RecordOut
    candidate_record: RecordOut | None


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    total: int


class DecisionIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class MergeIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    survivor_person_id: UUID
    merged_person_id: UUID
    reason: str = Field(min_length=3, max_length=2000)


class UnmergeIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)


class HouseholdOut(BaseModel):
    id: UUID
    members: list[dict[str, str]]
    relationships: list[RelationshipView]
    updated_at: datetime
