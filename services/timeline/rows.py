"""The rows the projection writes: one chronology line, one described subject."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

#: Entry ids are derived from the event and the subject, so a replay writes the same ids.
ENTRY_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")

#: The kinds of entry that are contacts with the family (the "contacts in twelve months" flag);
#: lifecycle entries (acknowledged, rated, decided ...) are not.
CONTACT_KINDS = frozenset(
    {
        "referral",
        "domestic_abuse_incident",
        "unscheduled_care",
        "school_attendance",
        "child_protection_plan",
        "looked_after",
    }
)


_HASHED = (1 << 80) - 1 & ~(0xF << 76)  # the low 80 bits, less the version nibble
_VERSION_8 = 0x8 << 76  # RFC 9562 §5.8: a custom layout


def entry_id(event_id: uuid.UUID, subject_id: uuid.UUID) -> uuid.UUID:
    """An entry's id, from its event and subject: the same in a rebuild, so replaying the topics
    gives each entry the id it had. The first 48 bits are the event id's, which for a UUIDv7
    (``shared/ids.py``) are its milliseconds, so entries are inserted at the hot right-hand edge
    of the primary key rather than on a random page of an index of millions; the other 80 are a
    name-based hash (UUIDv5) of the event and the subject, with the version set to 8."""
    digest = uuid.uuid5(ENTRY_NAMESPACE, f"{event_id}:{subject_id}").int
    return uuid.UUID(int=(event_id.int >> 80) << 80 | _VERSION_8 | digest & _HASHED)


@dataclass(frozen=True)
class EntryRow:
    subject_id: uuid.UUID
    occurred_at: datetime
    kind: str
    title: str
    summary: str
    agency: str
    organisation_code: str
    source_type: str
    source_id: uuid.UUID
    who: str | None = None
    contact: str | None = None
    source_reference: str | None = None
    facts: dict[str, Any] | None = None

    def params(self, event_id: uuid.UUID) -> dict[str, Any]:
        return {
            "entry_id": entry_id(event_id, self.subject_id),
            "event_id": event_id,
            "subject_id": self.subject_id,
            "occurred_at": self.occurred_at,
            "kind": self.kind,
            "title": self.title[:300],
            "summary": self.summary,
            "agency": self.agency,
            "organisation_code": self.organisation_code,
            "who": self.who[:300] if self.who else None,
            "contact": self.contact[:300] if self.contact else None,
            "source_type": self.source_type,
            "source_id": self.source_id,
            "source_reference": self.source_reference,
            "facts": json.dumps(self.facts or {}, sort_keys=True, default=str),
        }


@dataclass(frozen=True)
class SubjectRow:
    subject_id: uuid.UUID
    role: str
    given_names: str | None
    family_name: str
    seen_at: datetime
    date_of_birth: date | None = None
    unborn_expected_date: date | None = None
    sex: str = "not_known"
    school_urn: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "role": self.role,
            "given_names": self.given_names,
            "family_name": self.family_name,
            "date_of_birth": self.date_of_birth,
            "unborn_expected_date": self.unborn_expected_date,
            "sex": self.sex,
            "school_urn": self.school_urn,
            "seen_at": self.seen_at,
        }
