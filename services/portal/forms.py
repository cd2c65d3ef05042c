"""The "raise a concern" form: from the posted fields to the referrals API's body, and from the
API's 422 ``errors[].field`` back to the form's fields, in plain words.

Form fields are named after the API's paths (``children[0].nhs_number`` is the field
``children-0-nhs_number``), so an error the API names lands on the field that caused it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from starlette.datastructures import FormData

CHILD_SLOTS = 3
MEMBER_SLOTS = 3

CATEGORIES: list[tuple[str, str]] = [
    ("neglect", "Neglect"),
    ("physical_abuse", "Physical abuse"),
    ("emotional_abuse", "Emotional abuse"),
    ("sexual_abuse", "Sexual abuse"),
    ("child_sexual_exploitation", "Child sexual exploitation"),
    ("child_criminal_exploitation", "Child criminal exploitation"),
    ("domestic_abuse", "Domestic abuse at home"),
    ("parental_mental_health", "A parent's or carer's mental health"),
    ("substance_misuse", "Drug or alcohol use"),
    ("missing_from_home", "Missing from home"),
    ("missing_from_education", "Missing from school"),
    ("online_harm", "Harm online"),
    ("self_harm", "Self-harm"),
    ("fgm", "Female genital mutilation (FGM)"),
    ("radicalisation", "Radicalisation"),
    ("other", "Something else"),
]
RELATIONSHIPS: list[tuple[str, str]] = [
    ("mother", "Mother"),
    ("father", "Father"),
    ("non_resident_parent", "Parent who lives elsewhere"),
    ("step_parent", "Step-parent"),
    ("partner_of_parent", "Parent's partner"),
    ("sibling", "Brother or sister"),
    ("half_sibling", "Half-brother or half-sister"),
    ("grandparent", "Grandparent"),
    ("other", "Someone else"),
]
SEXES: list[tuple[str, str]] = [
    ("female", "Female"),
    ("male", "Male"),
    ("not_known", "Not known"),
]
CONSENT: list[tuple[str, str]] = [
    ("agreed", "Yes, they agreed"),
    ("refused", "No, they did not agree"),
    ("not_asked", "I did not ask them"),
]

#: Plain words for what the API's rules mean, by the last part of the field's name.
FRIENDLY: dict[str, str] = {
    "given_names": "Enter their first name",
    "family_name": "Enter their last name",
    "nhs_number": "Enter a real NHS number, like 943 476 5919, or leave it empty",
    "upn": "Enter a real unique pupil number (13 characters, like L938200124001), or leave it "
    "empty",
    "postcode": "Enter a real postcode, like DE1 1AA",
    "what_happened": "Tell us what happened",
    "categories": "Select what the concern is about",
    "immediate_risk": "Say whether any child is in danger right now",
    "email": "Enter an email address in the right format, like name@example.org",
    "phone": "Enter a phone number, like 01632 960 123",
    "date_of_birth": "Date of birth must be a real date in the past",
    "estimated_age_years": "Age must be a whole number from 0 to 17",
    "why_not_asked": "Say why you did not ask",
    "status": "Say whether they agreed",
    "competent": "Say whether the child can understand and decide for themselves",
    "relationship": "Select how they are related to the children",
    "name": "Enter your name",
    "role": "Enter your role",
}


@dataclass
class FormErrors:
    """Errors by field id, in the order the fields appear on the page."""

    by_field: dict[str, str] = field(default_factory=dict)

    def add(self, field_id: str, message: str) -> None:
        self.by_field.setdefault(field_id, message)

    def __bool__(self) -> bool:
        return bool(self.by_field)

    def summary(self, order: list[str]) -> list[dict[str, str]]:
        position = {field_id: index for index, field_id in enumerate(order)}
        ordered = sorted(self.by_field.items(), key=lambda item: position.get(item[0], 10_000))
        return [{"text": message, "href": f"#{field_id}"} for field_id, message in ordered]


def field_order() -> list[str]:
    """Every field id of the form, top to bottom (errors are listed in this order)."""
    ids: list[str] = ["referrer-name", "referrer-role", "referrer-email", "referrer-phone"]
    for child in range(CHILD_SLOTS):
        prefix = f"children-{child}-"
        ids += [
            prefix + name
            for name in (
                "given_names",
                "family_name",
                "date_of_birth",
                "estimated_age_years",
                "sex",
                "nhs_number",
                "upn",
                "address-lines-0",
                "address-town",
                "address-postcode",
                "own_words",
            )
        ]
    for member in range(MEMBER_SLOTS):
        prefix = f"family_members-{member}-"
        ids += [
            prefix + name
            for name in (
                "given_names",
                "family_name",
                "relationship",
                "parental_responsibility",
                "lives_with_child",
            )
        ]
    ids += [
        "concern-categories",
        "concern-what_happened",
        "concern-actions_taken",
        "concern-immediate_risk",
        "consent-parents-status",
        "consent-parents-why_not_asked",
        "consent-child-status",
        "consent-child-why_not_asked",
        "consent-child-competent",
    ]
    return ids


def text_value(form: Mapping[str, Any], name: str) -> str:
    """A field as typed, trimmed ("" when absent); ``form`` is a posted form or a query."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _verbatim(form: FormData, name: str) -> str:
    """The child's own words: kept exactly as typed (only an empty box is nothing)."""
    value = form.get(name)
    return value if isinstance(value, str) and value.strip() else ""


def _yes_no(form: FormData, name: str) -> bool | None:
    return {"yes": True, "no": False}.get(text_value(form, name))


def date_value(
    form: Mapping[str, Any], prefix: str, errors: FormErrors, message: str
) -> str | None:
    """A GOV.UK date input (``prefix-day``, ``-month``, ``-year``) as an ISO date; None when
    left empty; an error at ``prefix`` when it is not a real date."""
    parts = [text_value(form, f"{prefix}-{part}") for part in ("day", "month", "year")]
    if not any(parts):
        return None
    try:
        day, month, year = (int(part) for part in parts)
        if year < 1900:
            raise ValueError(year)
        return date(year, month, day).isoformat()
    except ValueError:
        errors.add(prefix, message)
        return None


@dataclass
class ReferralForm:
    """The posted form as typed (to show it again) and the API body built from it."""

    values: dict[str, str]
    categories: list[str]
    body: dict[str, Any]
    errors: FormErrors


def parse_referral_form(
    form: FormData, *, organisation_code: str, organisation_name: str
) -> ReferralForm:
    errors = FormErrors()
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    children: list[dict[str, Any]] = []
    for slot in range(CHILD_SLOTS):
        prefix = f"children-{slot}-"
        used = slot == 0 or any(
            text_value(form, prefix + name) for name in ("given_names", "family_name", "own_words")
        )
        if not used:
            continue
        child: dict[str, Any] = {
            "given_names": text_value(form, prefix + "given_names") or None,
            "family_name": text_value(form, prefix + "family_name"),
            "sex": text_value(form, prefix + "sex") or "not_known",
            "school": {"urn": organisation_code, "name": organisation_name}
            if re.fullmatch(r"[0-9]{6}", organisation_code)
            else {"name": organisation_name},
        }
        born = date_value(
            form,
            prefix + "date_of_birth",
            errors,
            "Date of birth must be a real date, like 27 3 2016",
        )
        age = text_value(form, prefix + "estimated_age_years")
        if born is not None:
            child["date_of_birth"] = born
        if age:
            if age.isdigit() and int(age) <= 17:
                child["estimated_age_years"] = int(age)
            else:
                errors.add(prefix + "estimated_age_years", FRIENDLY["estimated_age_years"])
        if born is None and not age and (prefix + "date_of_birth") not in errors.by_field:
            errors.add(
                prefix + "date_of_birth",
                "Enter the child's date of birth, or their age if you do not know it",
            )
        for name in ("nhs_number", "upn"):
            if text_value(form, prefix + name):
                child[name] = text_value(form, prefix + name)
        line, town, postcode = (
            text_value(form, prefix + name)
            for name in ("address-lines-0", "address-town", "address-postcode")
        )
        if line or town or postcode:
            child["address"] = {"lines": [line] if line else [], "town": town or None}
            if postcode:
                child["address"]["postcode"] = postcode
            if not line:
                errors.add(prefix + "address-lines-0", "Enter the first line of the address")
        if _verbatim(form, prefix + "own_words"):
            child["own_words"] = _verbatim(form, prefix + "own_words")
        if child["given_names"] is None:
            errors.add(prefix + "given_names", "Enter the child's first name")
        children.append(child)

    members: list[dict[str, Any]] = []
    for slot in range(MEMBER_SLOTS):
        prefix = f"family_members-{slot}-"
        if not (
            text_value(form, prefix + "given_names") or text_value(form, prefix + "family_name")
        ):
            continue
        relationship = text_value(form, prefix + "relationship")
        responsibility = _yes_no(form, prefix + "parental_responsibility")
        lives_with = _yes_no(form, prefix + "lives_with_child")
        if not relationship:
            errors.add(prefix + "relationship", FRIENDLY["relationship"])
        if responsibility is None:
            errors.add(
                prefix + "parental_responsibility",
                "Say whether they have parental responsibility",
            )
        if lives_with is None:
            errors.add(prefix + "lives_with_child", "Say whether they live with the children")
        members.append(
            {
                "given_names": text_value(form, prefix + "given_names"),
                "family_name": text_value(form, prefix + "family_name"),
                "relationships": [
                    {
                        "child": index,
                        "relationship": relationship or "other",
                        "parental_responsibility": bool(responsibility),
                        "lives_with_child": bool(lives_with),
                    }
                    for index in range(len(children))
                ],
            }
        )

    categories = [value for value in form.getlist("concern-categories") if isinstance(value, str)]
    if not categories:
        errors.add("concern-categories", FRIENDLY["categories"])
    if not text_value(form, "concern-what_happened"):
        errors.add("concern-what_happened", FRIENDLY["what_happened"])
    risk = _yes_no(form, "concern-immediate_risk")
    if risk is None:
        errors.add("concern-immediate_risk", FRIENDLY["immediate_risk"])
    concern: dict[str, Any] = {
        "categories": categories,
        "what_happened": text_value(form, "concern-what_happened"),
        "immediate_risk": bool(risk),
    }
    if text_value(form, "concern-actions_taken"):
        concern["actions_taken"] = text_value(form, "concern-actions_taken")

    consent: dict[str, Any] = {"parents": _party_consent(form, "consent-parents")}
    if not consent["parents"]["status"]:
        errors.add("consent-parents-status", "Say whether the parents or carers agreed")
    elif consent["parents"]["status"] == "not_asked" and "why_not_asked" not in consent["parents"]:
        errors.add("consent-parents-why_not_asked", FRIENDLY["why_not_asked"])
    if text_value(form, "consent-child-status"):
        child_consent = _party_consent(form, "consent-child")
        competent = _yes_no(form, "consent-child-competent")
        if competent is None:
            errors.add("consent-child-competent", FRIENDLY["competent"])
        child_consent["competent"] = bool(competent)
        if child_consent["status"] == "not_asked" and "why_not_asked" not in child_consent:
            errors.add("consent-child-why_not_asked", FRIENDLY["why_not_asked"])
        consent["child"] = child_consent

    referrer: dict[str, Any] = {
        "organisation_name": organisation_name,
        "name": text_value(form, "referrer-name"),
        "role": text_value(form, "referrer-role"),
        "raised_via": "portal",
    }
    for name in ("email", "phone"):
        if text_value(form, f"referrer-{name}"):
            referrer[name] = text_value(form, f"referrer-{name}")
    if not referrer["name"]:
        errors.add("referrer-name", FRIENDLY["name"])
    if not referrer["role"]:
        errors.add("referrer-role", FRIENDLY["role"])
    if "email" not in referrer and "phone" not in referrer:
        errors.add(
            "referrer-email", "Enter an email address or a phone number, so the MASH can reach you"
        )

    body = {
        "referrer": referrer,
        "children": children,
        "family_members": members,
        "concern": concern,
        "consent": consent,
    }
    return ReferralForm(values=values, categories=categories, body=body, errors=errors)


def _party_consent(form: FormData, prefix: str) -> dict[str, Any]:
    party: dict[str, Any] = {"status": text_value(form, f"{prefix}-status")}
    if text_value(form, f"{prefix}-why_not_asked") and party["status"] == "not_asked":
        party["why_not_asked"] = text_value(form, f"{prefix}-why_not_asked")
    return party


_INDEX = re.compile(r"\[(\d+)\]")


def field_id(api_field: str, order: list[str]) -> str:
    """The form field for an API error's ``field``: the same path, or the first field under it
    (an error about a whole child goes to that child's first field)."""
    candidate = _INDEX.sub(r"-\1", api_field).replace(".", "-")
    candidate = re.sub(r"^(family_members-\d+)-relationships-\d+", r"\1", candidate)
    candidate = re.sub(r"-unborn.*$", "-date_of_birth", candidate)
    if candidate == "referrer":
        return "referrer-email"  # "give an email or a phone number"
    while candidate:
        if candidate in order:
            return candidate
        under = [known for known in order if known.startswith(candidate + "-")]
        if under:
            return under[0]
        candidate = candidate.rpartition("-")[0]
    return order[0]


def api_errors(errors: list[dict[str, Any]], form_errors: FormErrors, order: list[str]) -> None:
    """Map the API's 422 errors onto the form's fields, in plain words where we know them."""
    for error in errors:
        api_field = str(error.get("field", ""))
        message = str(error.get("message", "")).strip()
        target = field_id(api_field, order)
        last = target.rsplit("-", 1)[-1]
        if api_field == "referrer":
            friendly = "Enter an email address or a phone number, so the MASH can reach you"
        elif "exactly one of date_of_birth" in message:
            friendly = "Enter the child's date of birth, or their age if you do not know it"
        elif "why consent was not asked" in message:
            friendly = "Say why you did not ask"
            target = target.rsplit("-", 1)[0] + "-why_not_asked"
        elif "in the future" in message:
            friendly = "Date of birth must be in the past"
        else:
            friendly = FRIENDLY.get(last) or (message[:1].upper() + message[1:])
        form_errors.add(target, friendly)
