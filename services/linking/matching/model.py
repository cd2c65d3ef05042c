"""The trained Fellegi-Sunter model, scored straight from precomputed log2 Bayes-factor tables.

A pair's match weight is the prior log-odds plus, for each comparison, log2(m/u) of the level
the pair is at (missing values add nothing); the exact levels of the name comparisons are
term-frequency adjusted (log2(m / frequency of the name)), so that agreeing on "Smith" counts
for less than agreeing on "Featherstonehaugh". Probability = 2^w / (1 + 2^w).

On top of the weights, the rules this domain needs (see docs/linking.md):

* a validated NHS number or permanent UPN held by both links deterministically — unless the
  given names and dates of birth both disagree, which sends the pair to a person instead;
* different validated identifiers, or two real given names that are plainly different, are a
  *conflict*: never an automatic link, whatever the other fields say. That is the twin and
  sibling trap: same family name, date of birth (twins) and address, different given names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from rapidfuzz.distance import DamerauLevenshtein

from services.linking.matching import comparisons as cmp
from services.linking.matching import names
from services.linking.matching.records import Prepared

DEFAULT_MODEL_PATH: Final = Path(__file__).with_name("model.json")
GIVEN_DIFFERENT: Final = len(cmp.GIVEN_LEVELS) - 1
DOB_DIFFERENT: Final = len(cmp.DOB_LEVELS) - 1


class Method(StrEnum):
    NHS_NUMBER = "nhs_number"
    UPN = "upn"
    PROBABILISTIC = "probabilistic"
    REVIEW_ACCEPTED = "review_accepted"
    NEW_PERSON = "new_person"
    MERGE = "merge"
    UNMERGE = "unmerge"


class Band(StrEnum):
    LINK = "link"
    REVIEW = "review"
    NEW_PERSON = "new_person"


@dataclass(frozen=True)
class Thresholds:
    link: float = 0.99
    review: float = 0.5


@dataclass(frozen=True)
class FieldEvidence:
    comparison: str
    level: str | None  # None: one side did not hold the value
    weight: float  # log2 Bayes factor: > 0 for, < 0 against


@dataclass(frozen=True)
class PairScore:
    weight: float
    probability: float
    levels: tuple[int, ...]
    deterministic: Method | None
    conflict: str | None  # why an automatic link is forbidden, if it is

    def band(self, thresholds: Thresholds) -> Band:
        if self.deterministic is not None:
            return Band.LINK
        if self.conflict is not None:
            shared_identifier = self.levels[cmp.NHS] == 0 or self.levels[cmp.UPN] == 0
            return Band.REVIEW if shared_identifier else Band.NEW_PERSON
        if self.probability >= thresholds.link:
            return Band.LINK
        if self.probability >= thresholds.review:
            return Band.REVIEW
        return Band.NEW_PERSON


def probability_of(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds: float = 2.0**weight
    return odds / (1.0 + odds)


@dataclass
class LinkageModel:
    """m and u per comparison level, the prior, the name frequencies and the thresholds."""

    prior: float
    m: list[list[float]]
    u: list[list[float]]
    tf: dict[str, dict[str, float]] = field(default_factory=dict)
    tf_floor: float = 1e-5
    thresholds: Thresholds = field(default_factory=Thresholds)
    trained_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prior_weight = math.log2(self.prior / (1.0 - self.prior))
        self.weights: list[list[float]] = [
            [math.log2(max(m, 1e-12) / max(u, 1e-12)) for m, u in zip(ms, us, strict=True)]
            for ms, us in zip(self.m, self.u, strict=True)
        ]
        self._tf_exact: list[dict[str, float] | None] = []
        for index, comparison in enumerate(cmp.COMPARISONS):
            if comparison.tf_field is None:
                self._tf_exact.append(None)
                continue
            m_exact = max(self.m[index][0], 1e-12)
            table = self.tf.get(comparison.tf_field, {})
            self._tf_exact.append(
                {
                    value: math.log2(m_exact / max(freq, self.tf_floor))
                    for value, freq in table.items()
                }
            )
        self.known_given = known_names(self.tf)
        self._tf_default = [
            math.log2(max(self.m[i][0], 1e-12) / max(self.u[i][0], 1e-12))
            for i in range(len(cmp.COMPARISONS))
        ]
        self.given_frequency = self.tf.get("given", {})
        self.nickname_base = nickname_constant(
            self.m[cmp.GIVEN][GIVEN_NICKNAME], self.given_frequency
        )

    # Scoring ---------------------------------------------------------------------------------

    def exact_weight(self, index: int, value: str) -> float:
        table = self._tf_exact[index]
        if table is None:
            return self.weights[index][0]
        found = table.get(value)
        if found is not None:
            return found
        # A name the training data never saw is rare: as rare as the floor allows.
        return math.log2(max(self.m[index][0], 1e-12) / self.tf_floor)

    def nickname_weight(self, a: str, b: str) -> float:
        """The nickname level's weight for two given names, term-frequency adjusted: u is the
        chance that two records picked at random hold exactly these two names (2·fa·fb, from
        the names' frequencies), and m shares the level's m among the pairs of names in
        proportion to the rarer name's frequency (a nickname form is about as common as the
        share of its full name's records written that way). So the weight is
        ``constant - log2(max(fa, fb))``: "Tilly" for "Matilda" counts for more than "Ollie" for
        "Olivia". A nickname with a typo ("Ahlfie"), or a model without name frequencies,
        keeps the level's own weight."""
        if self.nickname_base is None or not names.nickname_related(a, b):
            return self.weights[cmp.GIVEN][GIVEN_NICKNAME]
        frequency = self.given_frequency
        floor = self.tf_floor
        common = max(frequency.get(a, floor), frequency.get(b, floor), floor)
        return self.nickname_base - math.log2(common)

    def nickname_weight_at_most(self, given: str) -> float:
        """The most ``nickname_weight(given, other)`` can be, whatever the other name: the
        weight falls as the commoner of the two gets commoner, so at most as if the other were
        rare."""
        pooled = self.weights[cmp.GIVEN][GIVEN_NICKNAME]
        if not given or self.nickname_base is None:
            return pooled
        floor = self.tf_floor
        common = max(self.given_frequency.get(given, floor), floor)
        return max(pooled, self.nickname_base - math.log2(common))

    def weight_of(self, a: Prepared, levels: tuple[int, ...], other_given: str) -> float:
        """The pair's match weight; ``other_given``: the other record's given name (the exact
        and nickname levels of the given name are weighed by the names' frequencies)."""
        total = self.prior_weight
        weights = self.weights
        for index, level in enumerate(levels):
            if level == cmp.NULL:
                continue
            if level == 0 and index == cmp.GIVEN:
                total += self.exact_weight(index, a.given)
            elif level == 0 and index == cmp.FAMILY:
                total += self.exact_weight(index, a.family)
            elif level == GIVEN_NICKNAME and index == cmp.GIVEN:
                total += self.nickname_weight(a.given, other_given)
            else:
                total += weights[index][level]
        return total

    def score(self, a: Prepared, b: Prepared, moved: bool = False) -> PairScore:
        """``moved``: the two records' homes are joined by a known move of the household."""
        levels = cmp.levels(a, b, moved)
        weight = self.weight_of(a, levels, b.given)
        return PairScore(
            weight=weight,
            probability=probability_of(weight),
            levels=levels,
            deterministic=deterministic(levels),
            conflict=conflict(a, b, levels, self.known_given),
        )

    def evidence(
        self, a: Prepared, levels: tuple[int, ...], other_given: str
    ) -> list[FieldEvidence]:
        """Each field's level and its weight, for and against: what a reviewer reads."""
        found = []
        for index, (comparison, level) in enumerate(zip(cmp.COMPARISONS, levels, strict=True)):
            if level == cmp.NULL:
                found.append(FieldEvidence(comparison.name, None, 0.0))
                continue
            if level == 0 and comparison.tf_field is not None:
                value = a.given if index == cmp.GIVEN else a.family
                weight = self.exact_weight(index, value)
            elif level == GIVEN_NICKNAME and index == cmp.GIVEN:
                weight = self.nickname_weight(a.given, other_given)
            else:
                weight = self.weights[index][level]
            found.append(FieldEvidence(comparison.name, comparison.levels[level], round(weight, 3)))
        return found

    # Persistence -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "prior": self.prior,
            "comparisons": {
                comparison.name: {
                    "levels": list(comparison.levels),
                    "m": self.m[index],
                    "u": self.u[index],
                }
                for index, comparison in enumerate(cmp.COMPARISONS)
            },
            "tf": self.tf,
            "tf_floor": self.tf_floor,
            "thresholds": {"link": self.thresholds.link, "review": self.thresholds.review},
            "trained_on": self.trained_on,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LinkageModel:
        m, u = [], []
        for comparison in cmp.COMPARISONS:
            entry = document["comparisons"][comparison.name]
            if list(entry["levels"]) != list(comparison.levels):
                raise ValueError(f"model: {comparison.name} levels do not match the code")
            m.append([float(value) for value in entry["m"]])
            u.append([float(value) for value in entry["u"]])
        thresholds = document.get("thresholds", {})
        return cls(
            prior=float(document["prior"]),
            m=m,
            u=u,
            tf={name: dict(table) for name, table in document.get("tf", {}).items()},
            tf_floor=float(document.get("tf_floor", 1e-5)),
            thresholds=Thresholds(
                link=float(thresholds.get("link", 0.99)),
                review=float(thresholds.get("review", 0.5)),
            ),
            trained_on=dict(document.get("trained_on", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path | None = None) -> LinkageModel:
        return cls.from_json(json.loads((path or DEFAULT_MODEL_PATH).read_text()))

    def with_thresholds(self, link: float | None, review: float | None) -> LinkageModel:
        return LinkageModel(
            prior=self.prior,
            m=self.m,
            u=self.u,
            tf=self.tf,
            tf_floor=self.tf_floor,
            thresholds=Thresholds(
                link=self.thresholds.link if link is None else link,
                review=self.thresholds.review if review is None else review,
            ),
            trained_on=self.trained_on,
        )


def deterministic(levels: tuple[int, ...]) -> Method | None:
    """A shared validated identifier links, unless names and date of birth both contradict it
    (an identifier typed onto the wrong child's record: for a person to decide)."""
    contradicted = levels[cmp.GIVEN] == GIVEN_DIFFERENT and levels[cmp.DOB] == DOB_DIFFERENT
    if contradicted:
        return None
    if levels[cmp.NHS] == 0 and levels[cmp.UPN] != 1:
        return Method.NHS_NUMBER
    if levels[cmp.UPN] == 0 and levels[cmp.NHS] != 1:
        return Method.UPN
    return None


GENERATION_GAP_DAYS: Final = 3 * 365  # exact dates of birth this far apart: not one person
PREGNANCY_GAP_DAYS: Final = 300  # an expected date this far from a birth: another pregnancy


GIVEN_NICKNAME: Final = cmp.GIVEN_LEVELS.index("nickname")
GIVEN_SIMILAR: Final = 4  # levels from here on: similar-looking or sounding, or different
KNOWN_NAME_FREQUENCY: Final = 5e-5  # a given name seen this often may be a real name
TYPO_RATIO: Final = 20  # ... unless a name one edit away is this many times more common


def nickname_constant(m_nickname: float, frequency: dict[str, float]) -> float | None:
    """``LinkageModel.nickname_base``, the constant of ``LinkageModel.nickname_weight``, from
    the level's m and the given names' frequencies alone (no labels): chosen so that the
    pairs' m, each ``2·fa·fb · 2^weight = 2^(constant+1) · min(fa, fb)``, add up to the
    level's m over every pair of related names in the table. None without name frequencies."""
    rarer = 0.0
    for name, share in frequency.items():
        for other in names.nickname_variants(name):
            if name < other and other in frequency and names.nickname_related(name, other):
                rarer += min(share, frequency[other])
    if rarer <= 0.0 or m_nickname <= 0.0:
        return None
    return math.log2(m_nickname / rarer) - 1.0


def known_names(tf: dict[str, dict[str, float]]) -> frozenset[str]:
    """Given names common enough to be real names rather than someone's typing.

    Typing slips of a popular name recur ("Saumel" for Samuel is typed again and again), so
    frequency alone is not enough: a name one edit from a name twenty times as common is
    taken for a slip of it. Jack and Jake, Ava and Eva are both common: both stay real names.
    """
    shares = tf.get("given", {})
    frequent = {name: share for name, share in shares.items() if share >= KNOWN_NAME_FREQUENCY}
    known = set()
    for name, share in frequent.items():
        slip = any(
            other_share >= TYPO_RATIO * share and DamerauLevenshtein.distance(name, other) <= 1
            for other, other_share in frequent.items()
            if other != name
        )
        if not slip:
            known.add(name)
    return frozenset(known)


def _year_slip(a: Prepared, b: Prepared) -> bool:
    """Whether one record's date of birth, with its year one out, is near the other's expected
    date (2019-03-18 written 2018-03-18): the same pregnancy, the year mistyped."""
    born, expected = (a.dob, b.expected) if a.dob is not None else (b.dob, a.expected)
    if born is None or expected is None:
        return False
    for year in (expected.year - 1, expected.year, expected.year + 1):
        if abs(year - born.year) != 1:
            continue
        try:
            fixed = born.replace(year=year)
        except ValueError:  # 29 February
            continue
        if abs((fixed - expected).days) <= cmp.UNBORN_WINDOW_DAYS:
            return True
    return False


def conflict(
    a: Prepared, b: Prepared, levels: tuple[int, ...], known: frozenset[str] = frozenset()
) -> str | None:
    """Why these two records must never be linked automatically, or None.

    ``known`` holds the given names common enough to be real names: twins called Ava and Eva,
    or Jack and Jake, look like a typo of one name, but two real names are two children (and
    two names two edits apart, "Jatk" and "Jacs", are one child's name mistyped twice unless
    both are real names).
    """
    if levels[cmp.DOB] == DOB_DIFFERENT:
        if a.dob is not None and b.dob is not None:
            if abs((a.dob - b.dob).days) > GENERATION_GAP_DAYS:
                return "dates of birth years apart (siblings, or a parent and child of one name)"
        else:
            first, second = a.expected or a.dob, b.expected or b.dob
            if (
                first
                and second
                and abs((first - second).days) > PREGNANCY_GAP_DAYS
                and not _year_slip(a, b)
            ):
                return "an expected date of birth that belongs to another pregnancy"
    if levels[cmp.NHS] == 1:
        return "different valid NHS numbers"
    if levels[cmp.UPN] == 1:
        return "different permanent UPNs"
    given_level = levels[cmp.GIVEN]
    # Similar-looking, or a nickname only by way of a typo (Charlie and Harley: "Charley" is
    # Charlie's, one letter from Harley): two real names are still two children.
    looks_alike = given_level >= GIVEN_SIMILAR or (
        given_level == GIVEN_NICKNAME and not names.nickname_related(a.given, b.given)
    )
    two_real_names = (
        looks_alike and given_level != GIVEN_DIFFERENT and a.given in known and b.given in known
    )
    if given_level == GIVEN_DIFFERENT or two_real_names:
        if levels[cmp.NHS] == 0 or levels[cmp.UPN] == 0:
            if levels[cmp.DOB] == DOB_DIFFERENT:
                return "a shared identifier, but given name and date of birth both differ"
            return None
        # Twins share family name, date of birth and address; siblings family name and address.
        return "different given names (twins and siblings share everything else)"
    return None
