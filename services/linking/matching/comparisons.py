"""The comparisons of the model: for each field, which level of agreement a pair of records is at.

Each comparison maps a pair of prepared records to a level index (0 is the strongest agreement)
or ``NULL`` when one side lacks the value (no evidence either way). The levels are the domain's:
nicknames, swapped given and family names, hyphenated and double-barrelled family names and
name changes, dates of birth with day and month swapped or one digit wrong, an unborn child's
expected date, postcodes agreeing on the full code, the sector or the district.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from services.linking.matching import names
from services.linking.matching.records import Prepared

NULL: Final = -1
UNBORN_WINDOW_DAYS: Final = 42  # an expected date is usually within six weeks of the birth
ESTIMATE_YEARS: Final = 2  # an age estimated by a police officer or a nurse, in years


@lru_cache(maxsize=500_000)
def _similar(a: str, b: str) -> tuple[float, int]:
    """Jaro-Winkler similarity and Damerau-Levenshtein distance (C, rapidfuzz), cached: names
    repeat, so most pairs of a batch are look-ups."""
    return JaroWinkler.similarity(a, b), DamerauLevenshtein.distance(a, b)


def _close(a: str, b: str) -> bool:
    jw, dl = _similar(a, b)
    return jw >= 0.92 or (dl <= 1 and min(len(a), len(b)) >= 3)


def _same_given(a: str, b: str) -> bool:
    return a == b or names.nickname_related(a, b) or _close(a, b)


def _swapped_one_way(a: Prepared, b: Prepared) -> bool:
    if not (
        a.given == b.family
        or a.given in b.family_tokens
        or any(_close(a.given, part) for part in b.family_tokens)
    ):
        return False
    return any(_same_given(part, b.given) for part in a.family_tokens)


def _swapped(a: Prepared, b: Prepared) -> bool:
    """Given and family names written the other way round on one of the records (a
    double-barrelled or hyphenated part counts, and so does a typo in either name)."""
    return _swapped_one_way(a, b) or _swapped_one_way(b, a)


@lru_cache(maxsize=200_000)
def _nickname_close(a: str, b: str) -> bool:
    """A nickname with a typo ("Ahlfie" for Alfie, so for Alfred)."""
    return any(_close(variant, b) for variant in names.nickname_variants(a)) or any(
        _close(variant, a) for variant in names.nickname_variants(b)
    )


def given_name(a: Prepared, b: Prepared) -> int:
    if not a.given or not b.given:
        return NULL
    if a.given == b.given:
        return 0
    if _swapped(a, b):
        return 1
    if names.nickname_related(a.given, b.given):
        return 2
    if (
        set(a.given_tokens) & set(b.given_tokens)
        or a.given in b.alias_tokens
        or b.given in a.alias_tokens
    ):
        return 3
    if _close(a.given, b.given):
        return 4
    if _nickname_close(a.given, b.given):
        return 2
    if a.given_phonetic == b.given_phonetic:
        return 5
    jw, dl = _similar(a.given, b.given)
    if jw >= 0.80:
        return 6
    if dl <= 2 and min(len(a.given), len(b.given)) >= 3:
        return 7
    return 8


GIVEN_LEVELS: Final = (
    "exact",
    "swapped with family name",
    "nickname",
    "middle or other name",
    "Jaro-Winkler >= 0.92 or one edit",
    "sounds alike (Metaphone)",
    "Jaro-Winkler >= 0.80",
    "two edits apart",
    "different",
)


def family_name(a: Prepared, b: Prepared) -> int:
    if not a.family or not b.family:
        return NULL
    if a.family == b.family:
        return 0
    if a.given and b.given and _swapped(a, b):
        return 1
    if set(a.family_tokens) & set(b.family_tokens):
        return 2  # hyphenated or double-barrelled: one part in common
    if set(a.family_tokens) & b.alias_tokens or set(b.family_tokens) & a.alias_tokens:
        return 3  # a known other name: marriage, a step-parent's name, a name given up
    if _close(a.family, b.family):
        return 4
    if a.family_phonetic == b.family_phonetic:
        return 5
    if _similar(a.family, b.family)[0] >= 0.80:
        return 6
    return 7


FAMILY_LEVELS: Final = (
    "exact",
    "swapped with given name",
    "a hyphenated or double-barrelled part in common",
    "a known other name",
    "Jaro-Winkler >= 0.92 or one edit",
    "sounds alike (Metaphone)",
    "Jaro-Winkler >= 0.80",
    "different",
)


def date_of_birth(a: Prepared, b: Prepared) -> int:
    if a.dob is not None and b.dob is not None:
        if a.dob == b.dob:
            return 0
        if a.dob.year == b.dob.year and a.dob.day == b.dob.month and a.dob.month == b.dob.day:
            return 1
        if DamerauLevenshtein.distance(a.dob_text, b.dob_text) <= 1:
            return 2
        if a.dob.year == b.dob.year:
            return 5
        return 6
    expected_a = a.expected or a.dob
    expected_b = b.expected or b.dob
    if (a.expected or b.expected) and expected_a and expected_b:
        if abs((expected_a - expected_b).days) <= UNBORN_WINDOW_DAYS:
            return 3
        return 6
    if (
        a.birth_year is not None
        and b.birth_year is not None
        and (a.dob_estimated or b.dob_estimated)
    ):
        return 4 if abs(a.birth_year - b.birth_year) <= ESTIMATE_YEARS else 6
    return NULL


DOB_LEVELS: Final = (
    "exact",
    "day and month swapped",
    "one digit different or two transposed",
    "expected date of an unborn child within six weeks",
    "within an estimated age (two years)",
    "same year",
    "different",
)


def sex(a: Prepared, b: Prepared) -> int:
    if not a.sex or not b.sex:
        return NULL
    return 0 if a.sex == b.sex else 1


SEX_LEVELS: Final = ("same", "different")


def _same_address(a: Prepared, b: Prepared) -> bool | None:
    """Whether two free-text addresses name the same house (None if either is missing)."""
    if not a.address_tokens or not b.address_tokens:
        return None
    common = len(a.address_tokens & b.address_tokens)
    overlap = common / min(len(a.address_tokens), len(b.address_tokens))
    return overlap >= 0.6 and a.address_number == b.address_number


def residence(a: Prepared, b: Prepared, moved: bool = False) -> int:
    """Postcode and address together: they move together, so counting them as two independent
    comparisons would count one move (or one shared home) twice. ``moved``: the two records'
    homes are joined by a move of the household that other records show (``matching.moves``)."""
    same_address = _same_address(a, b)
    if not a.postcode or not b.postcode:
        if same_address is None:
            return NULL
        if same_address:
            return 2
        return 3 if moved else 6
    if a.postcode == b.postcode:
        return 0 if same_address else 1
    if same_address:
        return 2  # the same house with a mistyped postcode
    if moved:
        return 3
    if a.sector == b.sector:
        return 4
    if a.outward == b.outward:
        return 5
    return 6


RESIDENCE_LEVELS: Final = (
    "same postcode and address",
    "same postcode",
    "same address (number and street), postcode differs or missing",
    "different homes, joined by a move of the household",
    "postcode sector",
    "postcode outward code (district)",
    "different",
)


def nhs_number(a: Prepared, b: Prepared) -> int:
    if a.nhs is None or b.nhs is None:
        return NULL
    return 0 if a.nhs == b.nhs else 1


NHS_LEVELS: Final = ("same valid NHS number", "different valid NHS numbers")


def upn(a: Prepared, b: Prepared) -> int:
    if a.upn is None or b.upn is None:
        return NULL
    if a.upn == b.upn:
        return 0
    if a.upn_temporary or b.upn_temporary:
        return NULL  # a temporary UPN is replaced by the permanent one: no evidence against
    return 1


UPN_LEVELS: Final = ("same valid UPN", "different permanent UPNs")


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]
    level: Callable[[Prepared, Prepared], int]
    tf_field: str | None = None  # the exact level is term-frequency adjusted on this field


COMPARISONS: Final[tuple[Comparison, ...]] = (
    Comparison("given_name", GIVEN_LEVELS, given_name, tf_field="given"),
    Comparison("family_name", FAMILY_LEVELS, family_name, tf_field="family"),
    Comparison("date_of_birth", DOB_LEVELS, date_of_birth),
    Comparison("sex", SEX_LEVELS, sex),
    Comparison("residence", RESIDENCE_LEVELS, residence),
    Comparison("nhs_number", NHS_LEVELS, nhs_number),
    Comparison("upn", UPN_LEVELS, upn),
)
GIVEN, FAMILY, DOB, SEX, RESIDENCE, NHS, UPN = range(len(COMPARISONS))


def levels(a: Prepared, b: Prepared, moved: bool = False) -> tuple[int, ...]:
    """The comparison vector (gamma) of a pair; ``moved``: their homes are joined by a known
    move of the household (see ``residence``)."""
    return (
        given_name(a, b),
        family_name(a, b),
        date_of_birth(a, b),
        sex(a, b),
        residence(a, b, moved),
        nhs_number(a, b),
        upn(a, b),
    )
