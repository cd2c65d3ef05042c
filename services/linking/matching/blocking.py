"""Blocking keys: a record is compared only with records that share at least one key.

Each rule catches the true matches the others miss, so that one error in any field still
leaves a shared key: an identifier; date of birth with an initial of either name (a typo or
a name change elsewhere); the names' sounds (a wrong date of birth); a family name and the
month of birth or expected birth (an unborn child's record and the born child's); the postcode
and a given initial (a new family name and a wrong date of birth). The cost of resolving one
record depends on the size of its blocks, not on how many records are held.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

from services.linking.matching import names
from services.linking.matching.records import Prepared

RULES: Final = ("N", "U", "D", "E", "P", "M", "C")


def _month(day: date) -> str:
    return day.strftime("%Y%m")


def keys(record: Prepared) -> list[str]:
    """The blocking keys of a record, each prefixed by its rule's letter."""
    found: set[str] = set()
    if record.nhs:
        found.add(f"N{record.nhs}")
    if record.upn:
        found.add(f"U{record.upn}")
    given_initials = names.canonical_initials(record.given) if record.given else frozenset()
    family_parts = set(record.family_tokens) | set(record.alias_tokens)
    if record.given:
        # A family name written in the given name field (swapped) is still a family part.
        family_parts.add(record.given)
    family_initials = {part[:1] for part in family_parts}
    if record.dob is not None:
        for initial in given_initials:
            found.add(f"D{record.dob_text}{initial}")
        for initial in family_initials:
            found.add(f"E{record.dob_text}{initial}")
    family_sounds = {names.phonetic(part) for part in family_parts}
    if record.family:
        family_sounds.add(record.family_phonetic)
    if record.given:
        given_sound = names.phonetic(names.canonical(record.given))
        for sound in family_sounds:
            if sound and sound != given_sound:
                found.add(f"P{given_sound}|{sound}")
    months: set[str] = set()
    if record.dob is not None:
        months.add(_month(record.dob))
    if record.expected is not None:
        for shift in range(-42, 43, 14):  # every month within six weeks of the date
            months.add(_month(record.expected + timedelta(days=shift)))
    for sound in family_sounds:
        for month in months:
            found.add(f"M{sound}|{month}")
    if record.postcode:
        for initial in given_initials or {""}:
            found.add(f"C{record.postcode}|{initial}")
    return sorted(found)
