"""Pairwise precision, recall and F1 of a clustering against the true person of each record,
overall and per difficulty (identifier present or absent, moved, nickname, name change)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

DIFFICULTIES = ("identifier_present", "identifier_absent", "moved", "nickname", "name_change")


@dataclass(frozen=True)
class Scores:
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "true_pairs": self.true_pairs,
            "predicted_pairs": self.predicted_pairs,
            "correct_pairs": self.correct_pairs,
        }


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise(truth: Sequence[str], predicted: Sequence[object]) -> Scores:
    true_sizes = Counter(truth)
    predicted_sizes = Counter(predicted)
    both = Counter(zip(truth, predicted, strict=True))
    return Scores(
        true_pairs=sum(_pairs(n) for n in true_sizes.values()),
        predicted_pairs=sum(_pairs(n) for n in predicted_sizes.values()),
        correct_pairs=sum(_pairs(n) for n in both.values()),
    )


def by_difficulty(
    truth: Sequence[str],
    predicted: Sequence[object],
    difficulty: Callable[[int, int], set[str]],
) -> dict[str, Scores]:
    """Scores over the pairs (true or predicted) in each difficulty; ``difficulty(i, j)`` names
    the difficulties of a pair of records."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_true: dict[str, list[int]] = defaultdict(list)
    by_predicted: dict[object, list[int]] = defaultdict(list)
    for index, (person, cluster) in enumerate(zip(truth, predicted, strict=True)):
        by_true[person].append(index)
        by_predicted[cluster].append(index)
    for members in by_true.values():
        for i, j in combinations(members, 2):
            same = predicted[i] == predicted[j]
            for name in difficulty(i, j):
                counts[name][0] += 1
                counts[name][2] += same
    for members in by_predicted.values():
        for i, j in combinations(members, 2):
            for name in difficulty(i, j):
                counts[name][1] += 1
    return {
        name: Scores(true_pairs=t, predicted_pairs=p, correct_pairs=c)
        for name, (t, p, c) in sorted(counts.items())
    }
