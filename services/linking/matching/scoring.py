"""Scoring one record against many stored candidates at once: the online resolve's hot path.

The candidates come column-wise, as the resolve query returns them (``Candidates``): no
candidate is prepared or turned into an object. Each comparison's level is worked out as
``comparisons`` does it, but once per distinct candidate *value* for the record being resolved
(names repeat: a block of Smiths shares one family-name level), and the weight is the same sum
in the same order as ``LinkageModel.weight_of``. ``tests/services/linking/test_matching.py``
holds every level, weight, conflict and identifier decision equal to the pairwise code's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Final

from rapidfuzz.distance import DamerauLevenshtein

from services.linking.matching import comparisons as cmp
from services.linking.matching import names
from services.linking.matching.model import (
    DOB_DIFFERENT,
    GENERATION_GAP_DAYS,
    GIVEN_DIFFERENT,
    GIVEN_NICKNAME,
    GIVEN_SIMILAR,
    PREGNANCY_GAP_DAYS,
    LinkageModel,
)
from services.linking.matching.records import FEATURE_COLUMNS, SEXES, Prepared, restore

NULL: Final = cmp.NULL
BEST: Final = -2  # in ``Scorer.best_weight``: whatever level weighs most
#: The columns of a candidate row, in order (``LinkingRepository.candidate_rows``).
COLUMNS: Final = (
    "id",
    "person_id",
    "date_of_birth",
    "dob_estimated",
    "expected_date",
    "sex",
    "postcode",
    "nhs_number",
    "upn",
    *FEATURE_COLUMNS,
)


class Candidates:
    """Candidate records column-wise (each attribute a tuple, one value per candidate)."""

    __slots__ = COLUMNS

    id: tuple[Any, ...]
    person_id: tuple[Any, ...]
    date_of_birth: tuple[date | None, ...]
    dob_estimated: tuple[bool, ...]
    expected_date: tuple[date | None, ...]
    sex: tuple[str | None, ...]
    postcode: tuple[str | None, ...]
    nhs_number: tuple[str | None, ...]
    upn: tuple[str | None, ...]
    given_norm: tuple[str, ...]
    given_tokens: tuple[Sequence[str], ...]
    given_placeholder: tuple[bool, ...]
    family_norm: tuple[str, ...]
    family_tokens: tuple[Sequence[str], ...]
    alias_tokens: tuple[Sequence[str], ...]
    given_sound: tuple[str, ...]
    family_sound: tuple[str, ...]
    address_number: tuple[str, ...]
    address_tokens: tuple[Sequence[str], ...]
    homes: tuple[Sequence[str], ...]

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
        for name, values in zip(COLUMNS, columns, strict=True):
            setattr(self, name, values)

    def __len__(self) -> int:
        return len(self.id)

    def prepared(self, index: int) -> Prepared:
        """One candidate's prepared form (for the few that need one)."""
        return restore(
            str(self.id[index]),
            **{name: getattr(self, name)[index] for name in COLUMNS[2:]},
        )


class Scorer:
    """The comparisons of one record with candidates, remembered per candidate value."""

    def __init__(self, model: LinkageModel, record: Prepared) -> None:
        self.model = model
        self.q = record
        self._given: dict[str, int] = {}
        self._family: dict[str, int] = {}
        self._dob: dict[tuple[date | None, bool, date | None], int] = {}
        self._swap_family: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._swap_given: dict[str, tuple[bool, bool]] = {}
        self._swap_tokens: dict[tuple[str, ...], bool] = {}
        q = record
        self._given_tokens = frozenset(q.given_tokens)
        self._family_tokens = frozenset(q.family_tokens)
        weights = model.weights
        self._given_exact = model.exact_weight(cmp.GIVEN, q.given) if q.given else 0.0
        self._family_exact = model.exact_weight(cmp.FAMILY, q.family) if q.family else 0.0
        self._nickname: dict[str, float] = {}
        self._weights = weights
        self._best: list[float] | None = None

    # Names -----------------------------------------------------------------------------------

    def _swapped(self, given: str, family: str, family_tokens: Sequence[str]) -> bool:
        """``comparisons._swapped(q, candidate)``, from the candidate's name columns."""
        q = self.q
        tokens = tuple(family_tokens)
        key = (family, tokens)
        family_side = self._swap_family.get(key)
        if family_side is None:
            # q's given name is the candidate's family name (q one way, first half) ...
            family_side = (
                q.given == family
                or q.given in tokens
                or any(cmp._close(q.given, part) for part in tokens)
            )
            self._swap_family[key] = family_side
        given_side = self._swap_given.get(given)
        if given_side is None:
            # ... the candidate's given name is one of q's family-name parts (q one way,
            # second half), and the candidate's given name is q's family name (the other way).
            given_side = (
                any(cmp._same_given(part, given) for part in q.family_tokens),
                given == q.family
                or given in q.family_tokens
                or any(cmp._close(given, part) for part in q.family_tokens),
            )
            self._swap_given[given] = given_side
        if family_side and given_side[0]:
            return True
        if not given_side[1]:
            return False
        parts = self._swap_tokens.get(tokens)
        if parts is None:
            parts = any(cmp._same_given(part, q.given) for part in tokens)
            self._swap_tokens[tokens] = parts
        return parts

    def _given_rest(self, given: str, sound: str) -> int:
        """The levels of ``comparisons.given_name`` after the middle-name level."""
        found = self._given.get(given)
        if found is None:
            q = self.q
            if cmp._close(q.given, given):
                found = 4
            elif cmp._nickname_close(q.given, given):
                found = 2
            elif q.given_phonetic == sound:
                found = 5
            else:
                jw, dl = cmp._similar(q.given, given)
                if jw >= 0.80:
                    found = 6
                elif dl <= 2 and min(len(q.given), len(given)) >= 3:
                    found = 7
                else:
                    found = 8
            self._given[given] = found
        return found

    def _family_rest(self, family: str, sound: str) -> int:
        """The levels of ``comparisons.family_name`` after the known-other-name level."""
        found = self._family.get(family)
        if found is None:
            q = self.q
            if cmp._close(q.family, family):
                found = 4
            elif q.family_phonetic == sound:
                found = 5
            elif cmp._similar(q.family, family)[0] >= 0.80:
                found = 6
            else:
                found = 7
            self._family[family] = found
        return found

    # Dates of birth ----------------------------------------------------------------------------

    def _date_of_birth(self, born: date | None, estimated: bool, expected_date: date | None) -> int:
        key = (born, estimated, expected_date)
        found = self._dob.get(key)
        if found is None:
            found = self._dob[key] = self._date_of_birth_level(born, estimated, expected_date)
        return found

    def _date_of_birth_level(
        self, born: date | None, estimated: bool, expected_date: date | None
    ) -> int:
        q = self.q
        dob = None if estimated else born
        expected = expected_date if born is None else None
        if q.dob is not None and dob is not None:
            if q.dob == dob:
                return 0
            if q.dob.year == dob.year and q.dob.day == dob.month and q.dob.month == dob.day:
                return 1
            if DamerauLevenshtein.distance(q.dob_text, dob.strftime("%Y%m%d")) <= 1:
                return 2
            if q.dob.year == dob.year:
                return 5
            return 6
        expected_q = q.expected or q.dob
        expected_c = expected or dob
        if (q.expected or expected) and expected_q and expected_c:
            if abs((expected_q - expected_c).days) <= cmp.UNBORN_WINDOW_DAYS:
                return 3
            return 6
        year = born.year if born else (expected_date.year if expected_date else None)
        if (
            q.birth_year is not None
            and year is not None
            and (q.dob_estimated or (estimated and born is not None))
        ):
            return 4 if abs(q.birth_year - year) <= cmp.ESTIMATE_YEARS else 6
        return NULL

    # All comparisons -------------------------------------------------------------------------

    def levels(self, c: Candidates, index: int, moved: bool = False) -> tuple[int, ...]:
        """``comparisons.levels(q, candidate)``."""
        others = self.other_levels(c, index, moved)
        assert others is not None  # no floor: always worked out
        return self.name_levels(c, index) + others

    def name_levels(self, c: Candidates, index: int) -> tuple[int, int]:
        """The given and family name comparisons' levels (the first two of ``levels``)."""
        q = self.q
        given = c.given_norm[index]
        family = c.family_norm[index]
        # Given name.
        if not q.given or not given:
            given_level = NULL
        elif given == q.given:
            given_level = 0
        elif self._swapped(given, family, c.family_tokens[index]):
            given_level = 1
        elif names.nickname_related(q.given, given):
            given_level = 2
        elif (
            not self._given_tokens.isdisjoint(c.given_tokens[index])
            or q.given in c.alias_tokens[index]
            or given in q.alias_tokens
        ):
            given_level = 3
        else:
            given_level = self._given_rest(given, c.given_sound[index])
        # Family name.
        if not q.family or not family:
            family_level = NULL
        elif family == q.family:
            family_level = 0
        elif q.given and given and self._swapped(given, family, c.family_tokens[index]):
            family_level = 1
        elif not self._family_tokens.isdisjoint(c.family_tokens[index]):
            family_level = 2
        elif not q.alias_tokens.isdisjoint(c.family_tokens[index]) or not (
            self._family_tokens.isdisjoint(c.alias_tokens[index])
        ):
            family_level = 3
        else:
            family_level = self._family_rest(family, c.family_sound[index])
        return given_level, family_level

    def other_levels(
        self, c: Candidates, index: int, moved: bool = False, *, floor: float | None = None
    ) -> tuple[int, ...] | None:
        """The levels of the comparisons after the names (date of birth to UPN). With a
        ``floor``: None if, from its date of birth and identifiers alone, the candidate cannot
        weigh ``floor`` whatever its names, sex and residence (``best_weight`` with those at
        their best), so the rest is not worked out."""
        q = self.q
        dob_level = self._date_of_birth(
            c.date_of_birth[index], c.dob_estimated[index], c.expected_date[index]
        )
        # Identifiers.
        nhs = c.nhs_number[index] or None
        nhs_level = NULL if q.nhs is None or nhs is None else (0 if q.nhs == nhs else 1)
        upn = c.upn[index] or None
        if q.upn is None or upn is None:
            upn_level = NULL
        elif q.upn == upn:
            upn_level = 0
        elif q.upn_temporary or not upn[-1].isdigit():
            upn_level = NULL
        else:
            upn_level = 1
        if (
            floor is not None
            and self.best_weight((dob_level, BEST, BEST, nhs_level, upn_level)) < floor
        ):
            return None
        # Sex.
        sex = SEXES.get((c.sex[index] or "").lower(), "")
        sex_level = NULL if not q.sex or not sex else (0 if q.sex == sex else 1)
        # Residence (``comparisons.residence``).
        postcode = c.postcode[index] or ""
        tokens = c.address_tokens[index]
        if not q.address_tokens or not tokens:
            same_address = None
        else:
            common = sum(1 for token in tokens if token in q.address_tokens)
            overlap = common / min(len(q.address_tokens), len(tokens))
            same_address = overlap >= 0.6 and q.address_number == c.address_number[index]
        if not q.postcode or not postcode:
            if same_address is None:
                residence_level = NULL
            elif same_address:
                residence_level = 2
            else:
                residence_level = 3 if moved else 6
        elif q.postcode == postcode:
            residence_level = 0 if same_address else 1
        elif same_address:
            residence_level = 2
        elif moved:
            residence_level = 3
        elif q.sector == postcode[:-2]:
            residence_level = 4
        elif q.outward == postcode.split(" ")[0]:
            residence_level = 5
        else:
            residence_level = 6
        return (dob_level, sex_level, residence_level, nhs_level, upn_level)

    def best_weight(self, other_levels: tuple[int, ...]) -> float:
        """The most a candidate with these ``other_levels`` could weigh, whatever its names: an
        upper bound of ``weight``, to pass over candidates that cannot reach a threshold
        without comparing their names. A level of ``BEST`` stands for that comparison's best."""
        weights = self._weights
        if self._best is None:
            self._best = [max(0.0, *levels) for levels in weights]
            self._best[cmp.GIVEN] = max(
                self._best[cmp.GIVEN],
                self._given_exact,
                self.model.nickname_weight_at_most(self.q.given),
            )
            self._best[cmp.FAMILY] = max(self._best[cmp.FAMILY], self._family_exact)
        best = self._best
        total = self.model.prior_weight + best[cmp.GIVEN] + best[cmp.FAMILY]
        for index, level in enumerate(other_levels, start=cmp.DOB):
            if level == BEST:
                total += best[index]
            elif level != NULL:
                total += weights[index][level]
        return total + 1e-9  # added in another order than ``weight``: a hair of slack

    def weight(self, levels: tuple[int, ...], given: str) -> float:
        """``LinkageModel.weight_of(q, levels, given)``: the same terms, added in the same
        order; ``given``: the candidate's given name."""
        total = self.model.prior_weight
        weights = self._weights
        for index, level in enumerate(levels):
            if level == NULL:
                continue
            if level == 0 and index == cmp.GIVEN:
                total += self._given_exact
            elif level == 0 and index == cmp.FAMILY:
                total += self._family_exact
            elif level == GIVEN_NICKNAME and index == cmp.GIVEN:
                found = self._nickname.get(given)
                if found is None:
                    found = self._nickname[given] = self.model.nickname_weight(self.q.given, given)
                total += found
            else:
                total += weights[index][level]
        return total

    def conflict(self, c: Candidates, index: int, levels: tuple[int, ...]) -> str | None:
        """``model.conflict(q, candidate, levels, known)``."""
        q = self.q
        if levels[cmp.DOB] == DOB_DIFFERENT:
            born = c.date_of_birth[index]
            dob = None if c.dob_estimated[index] else born
            if q.dob is not None and dob is not None:
                if abs((q.dob - dob).days) > GENERATION_GAP_DAYS:
                    return (
                        "dates of birth years apart (siblings, or a parent and child of one name)"
                    )
            else:
                expected = c.expected_date[index] if born is None else None
                first, second = q.expected or q.dob, expected or dob
                if first and second and abs((first - second).days) > PREGNANCY_GAP_DAYS:
                    return "an expected date of birth that belongs to another pregnancy"
        if levels[cmp.NHS] == 1:
            return "different valid NHS numbers"
        if levels[cmp.UPN] == 1:
            return "different permanent UPNs"
        given_level = levels[cmp.GIVEN]
        given = c.given_norm[index]
        known = self.model.known_given
        looks_alike = given_level >= GIVEN_SIMILAR or (
            given_level == GIVEN_NICKNAME and not names.nickname_related(q.given, given)
        )
        two_real_names = (
            looks_alike and given_level != GIVEN_DIFFERENT and q.given in known and given in known
        )
        if given_level == GIVEN_DIFFERENT or two_real_names:
            if levels[cmp.NHS] == 0 or levels[cmp.UPN] == 0:
                if levels[cmp.DOB] == DOB_DIFFERENT:
                    return "a shared identifier, but given name and date of birth both differ"
                return None
            return "different given names (twins and siblings share everything else)"
        return None
