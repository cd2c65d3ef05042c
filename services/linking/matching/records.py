"""A person record as one agency knows it, and its prepared (normalised, derived) form.

Preparing does every piece of work that depends on one record only (normal forms, phonetic
keys, validated identifiers, postcode parts) once, so that comparing a pair is table look-ups
and a few string distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Final

from services.linking.matching import names
from shared.identifiers import (
    IdentifierError,
    normalise_nhs_number,
    normalise_postcode,
    normalise_upn,
)

SEXES = {"male": "M", "m": "M", "female": "F", "f": "F"}


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """What one agency said about one person, as it said it (any field may be missing)."""

    record_id: str
    source: str = ""
    given_names: str | None = None
    family_name: str | None = None
    other_names: tuple[str, ...] = ()
    date_of_birth: date | None = None
    dob_estimated: bool = False
    expected_date: date | None = None
    sex: str | None = None
    address: str | None = None
    postcode: str | None = None
    nhs_number: str | None = None
    upn: str | None = None


@dataclass(slots=True)
class Prepared:
    """A record made ready for comparison; identifiers that fail their check are ``None``."""

    record: PersonRecord
    given: str
    given_tokens: tuple[str, ...]
    given_placeholder: bool
    family: str
    family_tokens: tuple[str, ...]
    alias_tokens: frozenset[str]
    given_phonetic: str
    family_phonetic: str
    dob: date | None
    dob_text: str
    birth_year: int | None
    dob_estimated: bool
    expected: date | None
    sex: str
    postcode: str
    sector: str
    outward: str
    address_number: str
    address_tokens: frozenset[str]
    nhs: str | None
    upn: str | None
    upn_temporary: bool
    problems: list[str] = field(default_factory=list)
    # Where the record places its subject: its postcode and its house (see ``matching.moves``).
    homes: tuple[str, ...] = ()

    @property
    def record_id(self) -> str:
        return self.record.record_id


@lru_cache(maxsize=100_000)
def _address_parts(address: str | None) -> tuple[str, frozenset[str], str]:
    """The house number (or first number), the word tokens of a free-text address, and the
    house as a key: its number and the first two words after it, the street ("" if either is
    missing)."""
    if not address:
        return "", frozenset(), ""
    text = names.normalise(address.replace(",", " ").replace("/", " "))
    raw = address.upper().replace(",", " ").split()
    at = next((index for index, part in enumerate(raw) if any(ch.isdigit() for ch in part)), -1)
    number = raw[at] if at >= 0 else ""
    street = [names.normalise(part) for part in raw[at + 1 :] if part.isalpha()][:2]
    house = f"A{number}|{' '.join(street)}" if number and street else ""
    return number, frozenset(token for token in names.tokens(text) if len(token) > 1), house


def prepare(record: PersonRecord, *, trusted: bool = False) -> Prepared:
    """Normalise one record; a value that fails its rule is noted in ``problems`` and dropped.

    ``trusted``: the identifiers and postcode were validated and normalised when the record was
    stored (the service's own records), so they are used as they are.
    """
    problems: list[str] = []
    given_full = names.normalise(record.given_names)
    given_tokens = names.tokens(given_full)
    placeholder = names.is_placeholder(given_full)
    given = "" if placeholder else (given_tokens[0] if given_tokens else "")
    if placeholder:
        given_tokens = ()
    family = names.normalise(record.family_name).replace(" ", "-")
    family_tokens = names.tokens(family)
    alias_tokens: set[str] = set()
    for other in record.other_names:
        alias_tokens.update(names.tokens(names.normalise(other)))
    nhs = upn = None
    upn_temporary = False
    if trusted:
        nhs, upn = record.nhs_number or None, record.upn or None
        upn_temporary = upn is not None and not upn[-1].isdigit()
    elif record.nhs_number:
        try:
            nhs = normalise_nhs_number(record.nhs_number)
        except IdentifierError as error:
            problems.append(f"nhs_number: {error}")
    if record.upn and not trusted:
        try:
            upn = normalise_upn(record.upn)
            upn_temporary = not upn[-1].isdigit()
        except IdentifierError as error:
            problems.append(f"upn: {error}")
    postcode = sector = outward = ""
    if record.postcode and trusted:
        postcode = record.postcode
        sector, outward = postcode[:-2], postcode.split(" ")[0]
    elif record.postcode:
        try:
            postcode = normalise_postcode(record.postcode)
            sector = postcode[:-2]
            outward = postcode.split(" ")[0]
        except IdentifierError as error:
            problems.append(f"postcode: {error}")
    dob = record.date_of_birth
    estimated = record.dob_estimated
    number, address_tokens, house = _address_parts(record.address)
    return Prepared(
        record=record,
        given=given,
        given_tokens=given_tokens,
        given_placeholder=placeholder,
        family=family,
        family_tokens=family_tokens,
        alias_tokens=frozenset(alias_tokens),
        given_phonetic=names.phonetic(given),
        family_phonetic=names.phonetic(family.replace("-", "")),
        dob=None if estimated else dob,
        dob_text="" if dob is None or estimated else dob.strftime("%Y%m%d"),
        birth_year=dob.year
        if dob
        else (record.expected_date.year if record.expected_date else None),
        dob_estimated=estimated and dob is not None,
        expected=record.expected_date if dob is None else None,
        sex=SEXES.get((record.sex or "").lower(), ""),
        postcode=postcode,
        sector=sector,
        outward=outward,
        address_number=number,
        address_tokens=address_tokens,
        nhs=nhs,
        upn=upn,
        upn_temporary=upn_temporary,
        problems=problems,
        homes=tuple(home for home in (f"P{postcode}" if postcode else "", house) if home),
    )


# Stored features -------------------------------------------------------------------------------

#: What ``prepare`` derives from a record that costs time (normal forms, tokens, phonetic keys,
#: address parts, homes): stored with each person record, so that a record resolved online is
#: compared with its candidates without preparing any of them again (``restore``).
FEATURE_COLUMNS: Final = (
    "given_norm",
    "given_tokens",
    "given_placeholder",
    "family_norm",
    "family_tokens",
    "alias_tokens",
    "given_sound",
    "family_sound",
    "address_number",
    "address_tokens",
    "homes",
)


def features(ready: Prepared) -> dict[str, object]:
    """The stored features of a prepared record (see ``FEATURE_COLUMNS``)."""
    return {
        "given_norm": ready.given,
        "given_tokens": list(ready.given_tokens),
        "given_placeholder": ready.given_placeholder,
        "family_norm": ready.family,
        "family_tokens": list(ready.family_tokens),
        "alias_tokens": sorted(ready.alias_tokens),
        "given_sound": ready.given_phonetic,
        "family_sound": ready.family_phonetic,
        "address_number": ready.address_number,
        "address_tokens": sorted(ready.address_tokens),
        "homes": list(ready.homes),
    }


def restore(
    record_id: str,
    *,
    date_of_birth: date | None,
    dob_estimated: bool,
    expected_date: date | None,
    sex: str | None,
    postcode: str | None,
    nhs_number: str | None,
    upn: str | None,
    given_norm: str,
    given_tokens: Sequence[str],
    given_placeholder: bool,
    family_norm: str,
    family_tokens: Sequence[str],
    alias_tokens: Sequence[str],
    given_sound: str,
    family_sound: str,
    address_number: str,
    address_tokens: Sequence[str],
    homes: Sequence[str],
) -> Prepared:
    """A stored record's prepared form from its columns: what ``prepare(..., trusted=True)``
    returns for it, with nothing normalised or looked up again."""
    dob = None if dob_estimated else date_of_birth
    postcode = postcode or ""
    return Prepared(
        record=PersonRecord(record_id),
        given=given_norm,
        given_tokens=tuple(given_tokens),
        given_placeholder=given_placeholder,
        family=family_norm,
        family_tokens=tuple(family_tokens),
        alias_tokens=frozenset(alias_tokens),
        given_phonetic=given_sound,
        family_phonetic=family_sound,
        dob=dob,
        dob_text=dob.strftime("%Y%m%d") if dob is not None else "",
        birth_year=date_of_birth.year
        if date_of_birth
        else (expected_date.year if expected_date else None),
        dob_estimated=dob_estimated and date_of_birth is not None,
        expected=expected_date if date_of_birth is None else None,
        sex=SEXES.get((sex or "").lower(), ""),
        postcode=postcode,
        sector=postcode[:-2] if postcode else "",
        outward=postcode.split(" ")[0] if postcode else "",
        address_number=address_number,
        address_tokens=frozenset(address_tokens),
        nhs=nhs_number or None,
        upn=upn or None,
        upn_temporary=upn is not None and upn != "" and not upn[-1].isdigit(),
        homes=tuple(homes),
    )
