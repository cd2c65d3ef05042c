"""Plain words for what the linking and consent services answer in codes: how records were
linked, what a comparison found, what a ledger entry is, which lawful basis. The codes stay in
the APIs; people read these."""

from __future__ import annotations

import re
from typing import Any

AGENCY = {
    "school": "School",
    "health": "Health",
    "police": "Police",
    "local_authority": "Children's services",
    "mash": "MASH",
    "dpo": "Data protection office",
    "consent": "Consent records",
}

# -- linking -----------------------------------------------------------------------------------

LINK_METHOD = {
    "nhs_number": "Same NHS number",
    "upn": "Same unique pupil number",
    "probabilistic": "Matched on name, date of birth and address",
    "review_accepted": "A person at the MASH checked and said they are the same",
    "new_person": "No match found: a new person",
    "merge": "Joined to another person",
    "unmerge": "Separated again after being joined",
}
HISTORY_ACTION = {
    "linked": "Record added",
    "merged": "Joined",
    "unmerged": "Separated",
    "review_rejected": "Checked: kept apart",
}
SEX = {"female": "Female", "male": "Male", "not_known": "Not known", "indeterminate": "Not known"}

#: What the other person is to the person shown (``related_person_id`` is this person): the
#: relationship read as stored.
RELATIONSHIP_TO_THEM = {
    "parent": "Parent",
    "non_resident_parent": "Parent who lives elsewhere",
    "step_parent": "Step-parent",
    "partner_of_parent": "Parent's partner",
    "sibling": "Brother or sister",
    "half_sibling": "Half-brother or half-sister",
    "grandparent": "Grandparent",
    "household_member": "Lives in the same home",
}
#: … and read the other way (this person is the ``kind`` of the other).
RELATIONSHIP_FROM_THEM = {
    "parent": "Child",
    "non_resident_parent": "Child (this parent lives elsewhere)",
    "step_parent": "Step-child",
    "partner_of_parent": "Child of their partner",
    "sibling": "Brother or sister",
    "half_sibling": "Half-brother or half-sister",
    "grandparent": "Grandchild",
    "household_member": "Lives in the same home",
}

#: The fields a reviewer compares, in the order they are shown, with the record fields each
#: comparison looked at.
COMPARED = (
    ("given_name", "First name", ("given_names",)),
    ("family_name", "Last name", ("family_name", "other_names")),
    ("date_of_birth", "Date of birth", ("date_of_birth", "expected_date")),
    ("sex", "Sex", ("sex",)),
    ("residence", "Postcode", ("postcode",)),
    ("nhs_number", "NHS number", ("nhs_number",)),
    ("upn", "Unique pupil number", ("upn",)),
)
#: What a comparison's level means, in words a reviewer uses.
LEVEL = {
    "exact": "The same",
    "same": "The same",
    "swapped with family name": "First and last names swapped round",
    "swapped with given name": "First and last names swapped round",
    "nickname": "One is a short form or nickname of the other",
    "middle or other name": "One is a middle or other name of the other",
    "a hyphenated or double-barrelled part in common": "Share part of a double-barrelled name",
    "a known other name": "One is a name the child is also known by",
    "Jaro-Winkler >= 0.92 or one edit": "Nearly the same: one letter different",
    "sounds alike (Metaphone)": "Sound alike",
    "Jaro-Winkler >= 0.80": "Look a little alike",
    "different": "Different",
    "day and month swapped": "Day and month swapped round",
    "one digit different or two transposed": "One digit different, or two the wrong way round",
    "expected date of an unborn child within six weeks": (
        "An expected date of birth within six weeks of the other date"
    ),
    "same year (or within an estimated age)": "Only the year is the same (or an age was guessed)",
    "same postcode and address": "Same address",
    "same postcode": "Same postcode",
    "same address (number and street), postcode differs or missing": (
        "Same house number and street; the postcode differs or is missing"
    ),
    "postcode sector": "Nearby: same postcode area",
    "postcode outward code (district)": "Same district",
    "same valid NHS number": "The same",
    "different valid NHS numbers": "Different",
    "same valid UPN": "The same",
    "different permanent UPNs": "Different",
}
REVIEW_REASON = {
    "in the review band": "They are alike, but not alike enough for the computer to be sure.",
    "matches more than one person (twins, or a parent and child of one name?)": (
        "This record fits more than one person: perhaps twins, or a parent and child with the "
        "same name."
    ),
    "different given names (twins and siblings share everything else)": (
        "The first names are different, but everything else matches: twins or brothers and "
        "sisters look like this."
    ),
    "dates of birth years apart (siblings, or a parent and child of one name)": (
        "The dates of birth are years apart: brothers and sisters, or a parent and child with "
        "the same name, look like this."
    ),
    "a shared identifier, but given name and date of birth both differ": (
        "They share an NHS number or pupil number, but the first name and date of birth are "
        "both different: the number may have been typed onto the wrong child's record."
    ),
}


def evidence_strength(weight: float | None, child: bool = True) -> tuple[str, str]:
    """What one field's evidence says, as a tag text and colour."""
    same, different = (
        ("the same child", "different children")
        if child
        else (
            "the same person",
            "different people",
        )
    )
    if weight is None or weight == 0:
        return ("No help either way", "grey")
    if weight >= 4:
        return (f"Strongly suggests {same}", "green")
    if weight > 0:
        return (f"Suggests {same}", "green")
    if weight <= -4:
        return (f"Strongly suggests {different}", "red")
    return (f"Suggests {different}", "orange")


_REVIEW_ACCEPTED = re.compile(r"^review [0-9a-f-]{36} accepted(?:: (?P<note>.*))?$", re.DOTALL)


def change_reason(reason: str | None) -> str:
    """Why records were joined or separated, in words: a review's answer, not its id."""
    if not reason:
        return ""
    accepted = _REVIEW_ACCEPTED.match(reason)
    if accepted:
        note = accepted.group("note")
        return "Answered in Records to check" + (f": {note}" if note else "")
    if reason == "no candidates":
        return "No other record looked like this one"
    return reason


def out_of_100(probability: float | None) -> str:
    """A match probability as a person would say it: '87 out of 100'."""
    if probability is None:
        return ""
    return f"{min(99, max(1, round(probability * 100)))} out of 100"


def display_name(records: list[dict[str, Any]]) -> str:
    """A person's name as their records most often give it (placeholders last)."""
    names: dict[str, int] = {}
    for record in records:
        name = " ".join(
            part for part in (record.get("given_names"), record.get("family_name")) if part
        )
        if name:
            names[name] = names.get(name, 0) + 1
    if not names:
        return "Name not known"
    return max(names.items(), key=lambda item: (item[1], len(item[0])))[0]


# -- consent -----------------------------------------------------------------------------------

LEDGER_KIND = {
    "consent.recorded": "Consent recorded",
    "consent.withdrawn": "Consent withdrawn",
    "disclosure.decided": "Decision to share or not",
    "retention.expired": "Kept long enough: case notes to be destroyed",
}
OUTCOME = {
    "share": ("Shared", "green"),
    "do_not_share": ("Not shared", "grey"),
    "expired": ("Expired", "grey"),
}
CONSENT_STATUS = {
    "given": "Given",
    "refused": "Refused",
    "withdrawn": "Withdrawn",
    "not_sought": "Not asked",
    "not_recorded": "None recorded",
}
LAWFUL_BASIS = {
    "consent": "Consent (Article 6(1)(a))",
    "contract": "Contract (Article 6(1)(b))",
    "legal_obligation": "Legal obligation (Article 6(1)(c))",
    "vital_interests": "Vital interests: to protect someone's life (Article 6(1)(d))",
    "public_task": "Public task (Article 6(1)(e))",
    "legitimate_interests": "Legitimate interests (Article 6(1)(f))",
}
PURPOSE = {
    "safeguarding_referral": "A safeguarding referral",
    "mash_enquiry": "MASH enquiries",
    "timeline_read": "MASH reading a child's timeline",
    "mash_triage": "MASH triage: reading a child's timeline",
    "referral_feedback": "Feedback to the person who raised a concern",
    "operation_encompass": "Police telling a school about a domestic abuse incident",
}
GRANTOR = {
    "child": "The child",
    "person_with_parental_responsibility": "A person with parental responsibility",
    "parents": "The parents",
}
#: The fields of a ledger entry's payload in the order a DPO reads them, with their labels.
PAYLOAD_FIELDS = (
    ("requester", "Asked by"),
    ("recipient", "To be shared with"),
    ("data_categories", "What information"),
    ("special_category", "Special category data"),
    ("requested_basis", "Lawful basis asked for"),
    ("article9_condition", "Article 9 condition"),
    ("schedule1_condition", "DPA 2018 Schedule 1 condition"),
    ("paragraph18_reason", "Why consent was not sought (paragraph 18)"),
    ("consent_sought", "Was consent sought"),
    ("why_not_sought", "Why consent was not sought"),
    ("consent_by_subject", "Consent found, for each person with a record of it"),
    ("subjects_without_consent_records", "People with no record of consent"),
    ("necessity_and_proportionality", "Why it is necessary and proportionate"),
    ("data_minimisation", "What was left out"),
    ("agreement", "Information sharing agreement"),
    ("decided_by", "Decided by"),
    ("approved_by", "Approved by"),
    ("override", "Consent overridden: basis, reason, approved by"),
    ("consent_overridden", "Consent overridden"),
    ("reasons", "Reasons recorded"),
    ("withdrawals_applied", "Withdrawals that applied"),
    ("grantor_kind", "Who gave the answer"),
    ("grantor_description", "Who, in words"),
    ("child_competent", "Child able to decide for themselves"),
    ("status", "Answer"),
    ("recipients", "Who it covers"),
    ("purposes", "For what"),
    ("obtained_how", "How it was asked"),
    ("obtained_at", "When"),
    ("obtained_by", "Asked by"),
    ("evidence_reference", "Evidence"),
    ("expires_at", "Ends"),
    ("withdrawn_by", "Withdrawn by"),
    ("reason", "Reason"),
    ("record_type", "Records"),
    ("last_referral_at", "Last referral"),
    ("policy", "Retention policy"),
    ("action", "What happens"),
)


def payload_rows(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """A ledger entry's payload as (label, text) rows, known fields first, then the rest."""
    labels = dict(PAYLOAD_FIELDS)
    ordered = [key for key, _ in PAYLOAD_FIELDS if key in payload] + sorted(
        key for key in payload if key not in labels
    )
    return [
        (labels.get(key, key.replace("_", " ").capitalize()), _as_text(payload[key]))
        for key in ordered
        if payload[key] not in (None, [], {}, "")
    ]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, dict):
        rest = {k: v for k, v in value.items() if v and k not in {"name", "role"}}
        who = ", ".join(str(value[k]) for k in ("name", "role") if value.get(k))
        details = "; ".join(f"{k.replace('_', ' ')}: {_as_text(v)}" for k, v in rest.items())
        return f"{who} ({details})" if who and details else who or details
    if isinstance(value, list):
        return ", ".join(_as_text(item) for item in value)
    return str(value)


def filters() -> dict[str, Any]:
    def lookup(table: dict[str, str]) -> Any:
        return lambda value: table.get(value, str(value or "").replace("_", " ").capitalize())

    return {
        "agency_text": lookup(AGENCY),
        "link_method_text": lookup(LINK_METHOD),
        "history_text": lookup(HISTORY_ACTION),
        "sex_text": lookup(SEX),
        "level_text": lambda value: LEVEL.get(value, value) if value else "Not on both records",
        "review_reason_text": lambda value: REVIEW_REASON.get(
            value, (value[:1].upper() + value[1:]) if value else ""
        ),
        "out_of_100": out_of_100,
        "change_reason": change_reason,
        "ledger_kind_text": lookup(LEDGER_KIND),
        "outcome_text": lambda value: OUTCOME.get(value, (str(value or ""), "grey"))[0],
        "outcome_colour": lambda value: OUTCOME.get(value, ("", "grey"))[1],
        "consent_status_text": lookup(CONSENT_STATUS),
        "lawful_basis_text": lookup(LAWFUL_BASIS),
        "purpose_text": lookup(PURPOSE),
        "grantor_text": lookup(GRANTOR),
        "short_id": lambda value: str(value)[:8],
    }
