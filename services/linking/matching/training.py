"""Training the model from unlabelled records, as Splink does.

* u (how often non-matches agree at each level) from random pairs, which are almost all
  non-matches;
* m (how often matches agree) by expectation maximisation over blocked pairs (pairs the domain
  rules forbid, such as twins, are held as non-matches rather than left to the mixture), in
  sessions:
  each session blocks on some fields and estimates m only for the others, because blocking on a
  field makes agreement on it certain and would bias its m;
* the prior from the first session's estimated match count scaled up by how often a match
  passes its blocking rule;
* term frequencies of given and family names from the records themselves.

No ground truth is used: ``python -m services.linking.matching.training`` trains on a synthetic
partnership, but the same code trains on any agency's records.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from services.linking.matching import batch, names
from services.linking.matching import comparisons as cmp
from services.linking.matching.model import (
    DEFAULT_MODEL_PATH,
    LinkageModel,
    Thresholds,
    conflict,
    known_names,
)
from services.linking.matching.records import Prepared, prepare

# A comparison vector and whether the domain rules forbid the pair (see model.conflict).
Pattern = tuple[tuple[int, ...], bool]
# Whether two records' homes are joined by a move of the household (see matching.moves).
Moved = Callable[[int, int], bool]


def _never(left: int, right: int) -> bool:
    return False


def estimate_u(
    prepared: Sequence[Prepared], pairs: int, rng: random.Random, moved: Moved = _never
) -> list[list[float]]:
    counts = [[1.0] * len(c.levels) for c in cmp.COMPARISONS]  # add-one smoothing
    n = len(prepared)
    for _ in range(pairs):
        i, j = rng.randrange(n), rng.randrange(n)
        if i == j:
            continue
        for index, level in enumerate(cmp.levels(prepared[i], prepared[j], moved(i, j))):
            if level != cmp.NULL:
                counts[index][level] += 1
    return [[value / sum(row) for value in row] for row in counts]


def blocked_patterns(
    prepared: Sequence[Prepared],
    key: Callable[[Prepared], str | None],
    known: frozenset[str],
    max_block: int = 200,
    moved: Moved = _never,
) -> Counter[Pattern]:
    blocks: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(prepared):
        value = key(record)
        if value:
            blocks[value].append(index)
    patterns: Counter[Pattern] = Counter()
    for members in blocks.values():
        if len(members) > max_block:
            continue
        for x, left in enumerate(members):
            for right in members[x + 1 :]:
                a, b = prepared[left], prepared[right]
                levels = cmp.levels(a, b, moved(left, right))
                patterns[(levels, conflict(a, b, levels, known) is not None)] += 1
    return patterns


def expectation_maximisation(
    patterns: Counter[Pattern],
    m: list[list[float]],
    u: list[list[float]],
    estimate: set[int],
    *,
    iterations: int = 40,
    start_lambda: float = 0.3,
) -> tuple[list[list[float]], float]:
    """m for the comparisons in ``estimate`` (others are left out of the likelihood), and the
    share of matches among the pairs."""
    m = [list(row) for row in m]
    share = start_lambda
    total = sum(patterns.values())
    for _ in range(iterations):
        numerators = [[1e-6] * len(row) for row in m]
        matched = 0.0
        for (pattern, forbidden), count in patterns.items():
            if forbidden:
                continue  # twins, siblings, parent and child: held as non-matches
            like_m, like_u = share, 1.0 - share
            for index in estimate:
                level = pattern[index]
                if level != cmp.NULL:
                    like_m *= m[index][level]
                    like_u *= u[index][level]
            weight = like_m / (like_m + like_u) if like_m + like_u > 0 else 0.0
            matched += weight * count
            for index in estimate:
                level = pattern[index]
                if level != cmp.NULL:
                    numerators[index][level] += weight * count
        share = min(max(matched / total, 1e-9), 1 - 1e-9)
        for index in estimate:
            row_total = sum(numerators[index])
            m[index] = [value / row_total for value in numerators[index]]
    return m, share


def _starting_m() -> list[list[float]]:
    start = []
    for comparison in cmp.COMPARISONS:
        size = len(comparison.levels)
        row = [0.9] + [0.1 / (size - 1)] * (size - 1) if size > 1 else [1.0]
        start.append(row)
    return start


def term_frequencies(prepared: Sequence[Prepared]) -> dict[str, dict[str, float]]:
    given = Counter(record.given for record in prepared if record.given)
    family = Counter(record.family for record in prepared if record.family)
    result = {}
    for name, counter in (("given", given), ("family", family)):
        total = sum(counter.values()) or 1
        result[name] = {value: round(count / total, 8) for value, count in counter.items()}
    return result


def train(
    prepared: Sequence[Prepared],
    *,
    seed: int = 7,
    u_pairs: int = 400_000,
    thresholds: Thresholds | None = None,
) -> LinkageModel:
    """Two stages: a model without knowledge of households' moves links the records; the moves
    its persons show (``moves.apply_clusters``) then let the second stage estimate the residence
    level "joined by a move of the household" like any other level."""
    first = _train(prepared, seed=seed, u_pairs=u_pairs, thresholds=thresholds)
    edges, best = batch.score_all(prepared, first)
    labels, _ = batch.cluster(prepared, edges, best, first.known_given)
    household = batch.household_moves(prepared, labels, edges, first.thresholds.review)

    def moved(left: int, right: int) -> bool:
        return household.joined(
            prepared[left].homes, prepared[right].homes, (labels[left], labels[right])
        )

    return _train(prepared, seed=seed, u_pairs=u_pairs, thresholds=thresholds, moved=moved)


def _train(
    prepared: Sequence[Prepared],
    *,
    seed: int,
    u_pairs: int,
    thresholds: Thresholds | None,
    moved: Moved = _never,
) -> LinkageModel:
    rng = random.Random(seed)  # noqa: S311 (sampling, not secrets)
    tf = term_frequencies(prepared)
    known = known_names(tf)
    u = estimate_u(prepared, u_pairs, rng, moved)
    m = _starting_m()
    all_fields = set(range(len(cmp.COMPARISONS)))
    estimates: dict[int, list[list[float]]] = defaultdict(list)
    # Session 1: same date of birth; estimates everything else (names, swaps, nicknames).
    s1 = blocked_patterns(prepared, lambda r: r.dob_text or None, known, moved=moved)
    fields1 = all_fields - {cmp.DOB}
    m1, share1 = expectation_maximisation(s1, m, u, fields1)
    for index in fields1:
        estimates[index].append(m1[index])
    # Session 2: same family name and postcode; estimates the date of birth, including an
    # unborn child's expected date (which a block on given names would never see).
    s2 = blocked_patterns(
        prepared,
        lambda r: f"{r.family}|{r.postcode}" if r.family and r.postcode else None,
        known,
        moved=moved,
    )
    fields2 = all_fields - {cmp.FAMILY, cmp.RESIDENCE}
    m2, _ = expectation_maximisation(s2, m1, u, fields2)
    estimates[cmp.DOB].append(m2[cmp.DOB])
    # Session 3: same sounds of given and family names; where people live, from matches that
    # moved (a block on the postcode would see none of them).
    s3 = blocked_patterns(
        prepared,
        lambda r: (
            f"{names.phonetic(names.canonical(r.given))}|{r.family_phonetic}"
            if r.given and r.family
            else None
        ),
        known,
        moved=moved,
    )
    fields3 = all_fields - {cmp.GIVEN, cmp.FAMILY}
    m3, _ = expectation_maximisation(s3, m1, u, fields3)
    estimates[cmp.RESIDENCE].append(m3[cmp.RESIDENCE])
    final_m = []
    for index in range(len(cmp.COMPARISONS)):
        rows = estimates[index]
        final_m.append([sum(values) / len(rows) for values in zip(*rows, strict=True)])
    # Prior: the matches session 1 found, over the share of matches its rule lets through.
    pairs1 = sum(s1.values())
    matches = share1 * pairs1 / max(final_m[cmp.DOB][0], 1e-6)
    n = len(prepared)
    prior = min(max(matches / (n * (n - 1) / 2), 1e-9), 0.5)
    return LinkageModel(
        prior=prior,
        m=final_m,
        u=u,
        tf=tf,
        tf_floor=round(0.5 / max(n, 1), 10),
        thresholds=thresholds or Thresholds(),
        trained_on={
            "records": n,
            "u_pairs": u_pairs,
            "sessions": [pairs1, sum(s2.values()), sum(s3.values())],
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    from services.linking.synthetic import generate

    parser = argparse.ArgumentParser(description="train the linking model on synthetic records")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=424242)
    parser.add_argument("--link", type=float, default=Thresholds.link)
    parser.add_argument("--review", type=float, default=Thresholds.review)
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)
    partnership = generate(args.records, seed=args.seed)
    prepared = [prepare(generated.record) for generated in partnership.records]
    model = train(prepared, thresholds=Thresholds(link=args.link, review=args.review))
    model.save(args.out)
    print(f"trained on {len(prepared)} records; prior {model.prior:.3g}; written to {args.out}")


if __name__ == "__main__":
    main()
