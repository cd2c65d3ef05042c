"""Households move together: evidence for the residence comparison from the rest of the
household.

Two records of one child at two homes look like two children: their residence comparison says
"different". But if *someone else* is recorded at both homes — their mother's records before and
after the move are one person, or a brother's old and new records match well on their own — the
two homes are joined by a move of the household, and the child's pair is at the residence level
"different homes, joined by a move of the household" instead.

A move supports a pair only if it comes from other people: evidence from the pair's own records
(or from records already linked to either of them) would count the pair's agreement twice. In a
batch the people are the first pass's clusters and the well-scoring pairs between them; online
they are the persons held (``LinkingRepository``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Final

from services.linking.matching import comparisons as cmp
from services.linking.matching.records import Prepared

MAX_HOMES: Final = 8  # a person at more homes than this is more likely a wrong merge than moves
MAX_SUPPORTS: Final = 6  # supports kept per pair of homes (enough to find one from others)
MOVED: Final = cmp.RESIDENCE_LEVELS.index("different homes, joined by a move of the household")

HomePair = tuple[str, str]
Support = tuple[Hashable, Hashable]  # the persons (clusters) of the two records that show it


def home_key(home: str) -> str:
    """The ``record_keys`` key under which a record is found at one of its homes."""
    return f"@{home}"


def home_pair(x: str, y: str) -> HomePair:
    return (x, y) if x < y else (y, x)


class HouseholdMoves:
    """Pairs of homes joined by moves, with who shows each."""

    def __init__(self) -> None:
        self.support: dict[HomePair, list[Support]] = defaultdict(list)

    def add(self, homes_a: Iterable[str], homes_b: Iterable[str], support: Support) -> None:
        for x in homes_a:
            for y in homes_b:
                if x == y:
                    continue
                found = self.support[home_pair(x, y)]
                if support not in found and len(found) < MAX_SUPPORTS:
                    found.append(support)

    def add_person(self, homes: Iterable[str], person: Hashable) -> None:
        """One person recorded at several homes: each pair of them is a move."""
        distinct = sorted(set(homes))
        if not 2 <= len(distinct) <= MAX_HOMES:
            return
        for index, x in enumerate(distinct):
            self.add([x], distinct[index + 1 :], (person, person))

    def joined(
        self, homes_a: Iterable[str], homes_b: Iterable[str], exclude: Iterable[Hashable]
    ) -> bool:
        """Whether a move shown by persons other than ``exclude`` joins a home of each side."""
        excluded = set(exclude)
        for x in homes_a:
            for y in homes_b:
                if x == y:
                    continue
                for first, second in self.support.get(home_pair(x, y), ()):
                    if first not in excluded and second not in excluded:
                        return True
        return False

    @classmethod
    def from_links(
        cls,
        prepared: Sequence[Prepared],
        labels: Sequence[Hashable],
        pairs: Iterable[tuple[int, int]],
    ) -> HouseholdMoves:
        """Moves from a clustering (each cluster at several homes) and from well-scoring pairs
        of records in different clusters at different homes (a household whose members' old
        and new records were each a near miss)."""
        moves = cls()
        homes_of: dict[Hashable, set[str]] = defaultdict(set)
        for record, label in zip(prepared, labels, strict=True):
            homes_of[label].update(record.homes)
        for label, homes in homes_of.items():
            moves.add_person(homes, label)
        for left, right in pairs:
            a, b = prepared[left], prepared[right]
            if labels[left] != labels[right] and cmp.residence(a, b) > MOVED:
                moves.add(a.homes, b.homes, (labels[left], labels[right]))
        return moves
