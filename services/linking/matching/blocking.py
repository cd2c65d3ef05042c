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

RULES: Final = ("N", "U", "D", "E", "P", "Q", "R", "Mb", "Mu", "C")


MAX_BLOCK: Final = 400  # a block bigger than this is a key too common to tell anyone apart
SOUND_MAX_BLOCK: Final = 100  # ... and, for the keys of names' sounds, this


def block_limit(key: str, largest: int = MAX_BLOCK) -> int:
    """The largest block searched under ``key``. The keys of names' sounds ("P" with a year of
    birth, "Q" and "R" without one) are tighter: they are the weakest keys, a record looks under
    several of them (three or five years), and the commonest names fill them. At 1,000,000
    records the commonest name in a year of birth held 229 records; a resolve reading three
    such years scored ~600 candidates, for matches the other keys find (bench/linking.py)."""
    return min(largest, SOUND_MAX_BLOCK) if key[:1] in ("P", "Q", "R") else largest


def _month(day: date) -> str:
    return day.strftime("%Y%m")


def _years(record: Prepared, spread: int) -> tuple[int, ...]:
    year = record.dob.year if record.dob is not None else record.birth_year
    assert year is not None
    return tuple(range(year - spread, year + spread + 1))


def name_sounds(record: Prepared) -> frozenset[str]:
    """The sounds of a record's names: its formal given name's and each family-name part's
    (and known other name's)."""
    sounds = {names.phonetic(part) for part in (*record.family_tokens, *record.alias_tokens)}
    if record.family:
        sounds.add(record.family_phonetic)
    if record.given:
        sounds.add(names.phonetic(names.canonical(record.given)))
    sounds.discard("")
    return frozenset(sounds)


def _keys(record: Prepared) -> tuple[set[str], set[str]]:
    """(the keys a record is filed under, the keys it looks under).

    Most rules file and look under the same keys. Three are asymmetric, so that blocks stay
    small as the records held grow (a block's pairs grow with the square of its size):
    * names' sounds: filed under the exact year of birth, looked for in the years around it
      (one typed out; two for an estimated age); a record without any year is filed under
      "no year" and looks at every year, and every dated record looks under "no year" too;
    * an unborn child's expected date: born records are filed under their birth month and look
      only for unborn records; unborn records look for both.
    """
    filed: set[str] = set()
    if record.nhs:
        filed.add(f"N{record.nhs}")
    if record.upn:
        filed.add(f"U{record.upn}")
    given_initials = names.canonical_initials(record.given) if record.given else frozenset()
    family_parts = set(record.family_tokens) | set(record.alias_tokens)
    family_initials = {part[:1] for part in family_parts}
    if record.given:
        # A family name written in the given name field (swapped) is still a family part.
        family_initials.add(record.given[:1])
    if record.dob is not None:
        for initial in given_initials:
            filed.add(f"D{record.dob_text}{initial}")
        for initial in family_initials:
            filed.add(f"E{record.dob_text}{initial}")
    if record.postcode:
        for initial in given_initials or {""}:
            filed.add(f"C{record.postcode}|{initial}")
    looked = set(filed)
    family_sounds = {names.phonetic(part) for part in family_parts}
    if record.family:
        family_sounds.add(record.family_phonetic)
    family_sounds.discard("")
    if record.given:
        given_sound = names.phonetic(names.canonical(record.given))
        for sound in family_sounds:
            if sound == given_sound:
                continue
            # In either order: a record with given and family names swapped shares it.
            name = "|".join(sorted((given_sound, sound)))
            if record.dob is not None or record.birth_year is not None:
                year = record.dob.year if record.dob is not None else record.birth_year
                filed.add(f"P{name}|{year}")
                spread = 1 if record.dob is not None else 2
                looked.update(f"P{name}|{y}" for y in _years(record, spread))
                filed.add(f"Q{name}")  # found by records without a year
                looked.add(f"R{name}")
            else:
                filed.add(f"R{name}")
                looked.add(f"Q{name}")
                looked.add(f"R{name}")
    if record.dob is not None:
        month = _month(record.dob)
        for sound in family_sounds:
            filed.add(f"Mb{sound}|{month}")
            looked.add(f"Mu{sound}|{month}")
    if record.expected is not None:
        for shift in range(-42, 43, 14):  # every month within six weeks of the date
            month = _month(record.expected + timedelta(days=shift))
            for sound in family_sounds:
                filed.add(f"Mu{sound}|{month}")
                looked.add(f"Mb{sound}|{month}")
                looked.add(f"Mu{sound}|{month}")
    return filed, looked


def keys(record: Prepared) -> list[str]:
    """The blocking keys a record is filed under (stored with it)."""
    return sorted(_keys(record)[0])


def query_keys(record: Prepared) -> list[str]:
    """The blocking keys under which a record looks for candidates."""
    return sorted(_keys(record)[1])
