"""Linking a whole set of records in memory: blocking, scoring, clustering.

Clustering is greedy and constrained: links are taken strongest first (deterministic ones
before probabilistic ones), and two clusters are joined only if no record of one *conflicts*
with a record of the other (different validated identifiers, plainly different given names).
Plain connected components would let one "Baby Smith" record chain a pair of twins together;
the constraint is what keeps twins apart.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from services.linking.matching import blocking, moves
from services.linking.matching import comparisons as cmp
from services.linking.matching.model import Band, LinkageModel, conflict, deterministic
from services.linking.matching.records import Prepared

MAX_BLOCK = blocking.MAX_BLOCK
MAX_CLUSTER_CHECK = 2_500  # cross pairs checked for conflicts before joining two clusters


@dataclass(frozen=True, slots=True)
class Edge:
    left: int
    right: int
    probability: float
    band: Band
    deterministic: bool
    weight: float = 0.0


def build_blocks(prepared: Sequence[Prepared]) -> dict[str, list[int]]:
    blocks: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(prepared):
        for key in blocking.keys(record):
            blocks[key].append(index)
    return {
        key: members
        for key, members in blocks.items()
        if len(members) <= blocking.block_limit(key, MAX_BLOCK)
    }


def _record_blocks(prepared: Sequence[Prepared], blocks: dict[str, list[int]]) -> list[list[str]]:
    """The blocks each record looks in (see blocking: some rules file and look differently)."""
    return [[key for key in blocking.query_keys(record) if key in blocks] for record in prepared]


# Workers of a forked pool read these instead of having them pickled per task.
_SHARED: dict[str, object] = {}


def _score_range(bounds: tuple[int, int]) -> tuple[list[Edge], dict[int, float]]:
    """A worker's share: its edges, and the best probabilities of only the records it touched
    (a list of every record's, per chunk, costs O(records) to send and to merge: at 5M records
    a thousand chunks of 5,000 made that quadratic)."""
    prepared: Sequence[Prepared] = _SHARED["prepared"]  # type: ignore[assignment]
    blocks: dict[str, list[int]] = _SHARED["blocks"]  # type: ignore[assignment]
    record_keys: list[list[str]] = _SHARED["record_keys"]  # type: ignore[assignment]
    model: LinkageModel = _SHARED["model"]  # type: ignore[assignment]
    keep: float = _SHARED["keep"]  # type: ignore[assignment]
    best: dict[int, float] = defaultdict(float)
    edges = score_candidates(prepared, blocks, record_keys, model, keep, range(*bounds), best)
    return edges, dict(best)


def score_candidates(
    prepared: Sequence[Prepared],
    blocks: dict[str, list[int]],
    record_keys: list[list[str]],
    model: LinkageModel,
    keep: float,
    indices: Iterable[int],
    best: list[float] | dict[int, float],
) -> list[Edge]:
    """Score each record against the later records it shares a block with; keep the edges at
    or above ``keep``, and raise ``best`` (per record, the best probability of any candidate;
    a list of every record's, or a ``defaultdict(float)``)."""
    edges: list[Edge] = []
    for left in indices:
        candidates: set[int] = set()
        for key in record_keys[left]:
            candidates.update(blocks[key])
        a = prepared[left]
        for right in candidates:
            if right <= left:
                continue
            _score_pair(model, a, prepared[right], left, right, keep, edges, best)
    return edges


def _score_pair(
    model: LinkageModel,
    a: Prepared,
    b: Prepared,
    left: int,
    right: int,
    keep: float,
    edges: list[Edge],
    best: list[float] | dict[int, float],
    moved: bool = False,
) -> None:
    """Score one pair: note its probability in ``best`` and keep its edge if it is worth it."""
    levels = cmp.levels(a, b, moved)
    weight = model.weight_of(a, levels, b.given)
    if weight < -30:
        return
    odds = 2.0**weight if weight < 60 else 2.0**60
    probability = odds / (1.0 + odds)
    if probability > best[left]:
        best[left] = probability
    if probability > best[right]:
        best[right] = probability
    method = deterministic(levels)
    if method is None and probability < keep:
        return
    thresholds = model.thresholds
    reason = conflict(a, b, levels, model.known_given)
    if method is not None:
        band = Band.LINK
    elif reason is not None:
        band = Band.REVIEW if levels[cmp.NHS] == 0 or levels[cmp.UPN] == 0 else Band.NEW_PERSON
    elif probability >= thresholds.link:
        band = Band.LINK
    elif probability >= thresholds.review:
        band = Band.REVIEW
    else:
        band = Band.NEW_PERSON
    edges.append(Edge(left, right, probability, band, method is not None, weight))


def household_moves(
    prepared: Sequence[Prepared], labels: Sequence[int], edges: Sequence[Edge], review: float
) -> moves.HouseholdMoves:
    """The moves the first pass shows: its clusters, and its well-scoring pairs (at least the
    review threshold, no conflict) between clusters."""
    supporting = (
        (edge.left, edge.right)
        for edge in edges
        if edge.probability >= review and edge.band is not Band.NEW_PERSON
    )
    return moves.HouseholdMoves.from_links(prepared, labels, supporting)


def _rescore_chunk(pairs: list[int]) -> tuple[list[Edge], dict[int, float]]:
    prepared: Sequence[Prepared] = _SHARED["prepared"]  # type: ignore[assignment]
    model: LinkageModel = _SHARED["model"]  # type: ignore[assignment]
    keep: float = _SHARED["keep"]  # type: ignore[assignment]
    edges: list[Edge] = []
    best: dict[int, float] = defaultdict(float)
    size = len(prepared)
    for pair in pairs:
        left, right = divmod(pair, size)
        _score_pair(model, prepared[left], prepared[right], left, right, keep, edges, best, True)
    return edges, dict(best)


def rescore_moves(
    prepared: Sequence[Prepared],
    labels: Sequence[int],
    model: LinkageModel,
    edges: list[Edge],
    best: list[float],
    household: moves.HouseholdMoves,
    *,
    keep: float = 0.05,
    workers: int = 1,
    done: set[int] | None = None,
) -> list[Edge]:
    """A pass of rescoring: score again, as at homes joined by a move, every pair of records in
    different clusters at two homes that a move shown by *other* clusters joins and that sound
    alike (``blocking.move_keys``: a block of its own, as such pairs may share no other key).
    Returns the edges with those pairs' edges replaced. ``done``: pairs (``left·records +
    right``) an earlier pass rescored, left as they are; this pass's pairs are added to it."""
    done = set() if done is None else done
    size = len(prepared)
    # Only the homes a move joins are indexed, and a pair is one int (left·size + right): at
    # 5M records an index by (home, sound) of every such record, and pairs as tuples, took more
    # memory than the records themselves and ran a one-process link-file out of 24 GB.
    homes_joined = {home for pair in household.support for home in pair}
    at_home: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(prepared):
        for home in record.homes:
            if home in homes_joined:
                at_home[home].append(index)
    pairs: set[int] = set()
    for x, y in household.support:
        lefts, rights = at_home.get(x), at_home.get(y)
        if not lefts or not rights:
            continue
        # The records at y by the sounds of their names, for this pair of homes only: a
        # postcode shared by many households holds many records, not all worth comparing.
        at_y: dict[str, list[int]] = defaultdict(list)
        for right in rights:
            for sound in blocking.name_sounds(prepared[right]):
                at_y[sound].append(right)
        for left in lefts:
            for sound in blocking.name_sounds(prepared[left]):
                for right in at_y.get(sound, ()):
                    if labels[left] == labels[right]:
                        continue
                    pair = left * size + right if left < right else right * size + left
                    if pair in pairs or pair in done:
                        continue
                    a, b = prepared[left], prepared[right]
                    if household.joined(a.homes, b.homes, (labels[left], labels[right])):
                        pairs.add(pair)
    done.update(pairs)
    ordered = sorted(pairs)
    chunks = [ordered[start : start + 20_000] for start in range(0, len(ordered), 20_000)]
    rescored: list[Edge] = []
    if len(chunks) > 1 and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _SHARED.update(prepared=prepared, model=model, keep=keep)
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for found, found_best in pool.imap(_rescore_chunk, chunks):
                    rescored.extend(found)
                    for index, value in found_best.items():
                        if value > best[index]:
                            best[index] = value
        finally:
            _SHARED.clear()
    else:
        for chunk in chunks:
            for pair in chunk:
                left, right = divmod(pair, size)
                _score_pair(
                    model, prepared[left], prepared[right], left, right, keep, rescored, best, True
                )
    return [e for e in edges if e.left * size + e.right not in pairs] + rescored


def score_all(
    prepared: Sequence[Prepared],
    model: LinkageModel,
    *,
    keep: float = 0.05,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Edge], list[float]]:
    """Every candidate pair's edge (at or above ``keep``), in parallel on a forked pool."""
    blocks = build_blocks(prepared)
    record_keys = _record_blocks(prepared, blocks)
    workers = workers or min(os.cpu_count() or 1, 4)
    total = len(prepared)
    chunk = 5_000
    ranges = [(start, min(start + chunk, total)) for start in range(0, total, chunk)]
    edges: list[Edge] = []
    best = [0.0] * total
    if workers <= 1 or total < 20_000 or "fork" not in multiprocessing.get_all_start_methods():
        for done, bounds in enumerate(ranges, start=1):
            edges.extend(
                score_candidates(prepared, blocks, record_keys, model, keep, range(*bounds), best)
            )
            if progress:
                progress(min(done * chunk, total), total)
        return edges, best
    _SHARED.update(
        prepared=prepared, blocks=blocks, record_keys=record_keys, model=model, keep=keep
    )
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            for done, (found, found_best) in enumerate(pool.imap(_score_range, ranges), start=1):
                edges.extend(found)
                for index, value in found_best.items():
                    if value > best[index]:
                        best[index] = value
                if progress:
                    progress(min(done * chunk, total), total)
    finally:
        _SHARED.clear()
    return edges, best


class _Clusters:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))
        self.members: dict[int, list[int]] = {}

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def group(self, root: int) -> list[int]:
        return self.members.get(root, [root])

    def join(self, a: int, b: int) -> None:
        members = self.group(a) + self.group(b)
        self.members.pop(a, None)
        self.members.pop(b, None)
        self.parent[b] = a
        self.members[a] = members


def cluster(
    prepared: Sequence[Prepared],
    edges: Sequence[Edge],
    best: Sequence[float],
    known: frozenset[str] = frozenset(),
) -> tuple[list[int], list[float]]:
    """Each record's cluster (the index of a representative record) and the probability of the
    link that joined it (for a record on its own, the best probability it had to anyone)."""
    clusters = _Clusters(len(prepared))
    probability = list(best)
    joined = [False] * len(prepared)
    ambiguous = _ambiguous(prepared, edges, known)
    links = sorted(
        (
            edge
            for edge in edges
            if edge.band is Band.LINK
            and (edge.deterministic or not (edge.left in ambiguous or edge.right in ambiguous))
        ),
        key=lambda edge: (edge.deterministic, edge.probability),
        reverse=True,
    )
    for edge in links:
        a, b = clusters.find(edge.left), clusters.find(edge.right)
        if a == b:
            _note(probability, joined, edge)
            continue
        if _conflicting(prepared, clusters.group(a), clusters.group(b), known):
            continue
        clusters.join(a, b)
        _note(probability, joined, edge)
    return [clusters.find(index) for index in range(len(prepared))], probability


def _ambiguous(
    prepared: Sequence[Prepared], edges: Sequence[Edge], known: frozenset[str]
) -> set[int]:
    """Records that would link about as well to two records which must not be one person: a
    "Baby Smith" that fits both twins, a record without a date of birth that fits a mother and
    the daughter who shares her name. Linking them to either could be the wrong one; they are
    left apart (and, in the service, go to the review queue). A record that fits one of the two
    far better (by ``AMBIGUITY_MARGIN`` bits: odds of 99 to 1) is not ambiguous: "Lewis" fits
    "Lewis" better than a mistyped "Loums", whatever "Loums" conflicts with."""
    partners: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for edge in edges:
        if edge.band is Band.LINK and not edge.deterministic:
            partners[edge.left].append((edge.right, edge.weight))
            partners[edge.right].append((edge.left, edge.weight))
    found = set()
    for record, others in partners.items():
        if len(others) < 2 or len(others) > 60:
            continue
        if _conflicting_within(prepared, others, known):
            found.add(record)
    return found


AMBIGUITY_MARGIN = math.log2(99)


def _conflicting_within(
    prepared: Sequence[Prepared], members: list[tuple[int, float]], known: frozenset[str]
) -> bool:
    """Whether two of the members conflict and fit the record about as well as each other."""
    for x, (left, left_weight) in enumerate(members):
        a = prepared[left]
        for right, right_weight in members[x + 1 :]:
            if abs(left_weight - right_weight) >= AMBIGUITY_MARGIN:
                continue
            b = prepared[right]
            if conflict(a, b, cmp.levels(a, b), known) is not None:
                return True
    return False


def _note(probability: list[float], joined: list[bool], edge: Edge) -> None:
    for index in (edge.left, edge.right):
        if not joined[index]:
            probability[index] = edge.probability
            joined[index] = True


def _conflicting(
    prepared: Sequence[Prepared], left: list[int], right: list[int], known: frozenset[str]
) -> bool:
    if len(left) * len(right) > MAX_CLUSTER_CHECK:
        return True  # an implausibly large person: do not grow it further automatically
    for x in left:
        a = prepared[x]
        for y in right:
            b = prepared[y]
            if conflict(a, b, cmp.levels(a, b), known) is not None:
                return True
    return False


# Passes of rescoring by households' moves. A pass can link a person across two homes that no
# move supported before (its own pair rescored because *another* member's pair showed the move),
# and that person is then a move supporting its relatives' pairs in the next pass. On seed 1's
# 100,000 records the second pass of rescoring adds 29 true pairs and no false one; the third
# finds no pair to score again.
MOVE_PASSES = 3


def score_with_moves(
    prepared: Sequence[Prepared],
    model: LinkageModel,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Edge], list[float]]:
    """Every candidate pair's edge, in passes: the first links without knowing where
    households moved; the moves its persons show then join homes for the next
    (``rescore_moves``), until a pass finds no pair to score again (``MOVE_PASSES`` at most)."""
    edges, best = score_all(prepared, model, workers=workers, progress=progress)
    workers = workers or min(os.cpu_count() or 1, 4)
    rescored: set[int] = set()
    for _ in range(MOVE_PASSES):
        labels, _ = cluster(prepared, edges, best, model.known_given)
        household = household_moves(prepared, labels, edges, model.thresholds.review)
        before = len(rescored)
        edges = rescore_moves(
            prepared, labels, model, edges, best, household, workers=workers, done=rescored
        )
        if len(rescored) == before:
            break
    return edges, best


def link(
    prepared: Sequence[Prepared],
    model: LinkageModel,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[int], list[float]]:
    edges, best = score_with_moves(prepared, model, workers=workers, progress=progress)
    return cluster(prepared, edges, best, model.known_given)
