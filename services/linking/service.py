"""The linking use cases: resolve a record, record a subject, review, merge and unmerge,
households. No commit here: the request or message scope owns the transaction, and every
state change writes its event to the outbox in that same transaction."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.linking import models
from services.linking.events import (
    HouseholdMember,
    HouseholdUpdated,
    LinkReviewDecided,
    LinkReviewRequired,
    PersonsMerged,
    PersonsUnmerged,
    RelationshipOut,
    SubjectLinked,
)
from services.linking.matching import blocking, moves
from services.linking.matching import comparisons as cmp
from services.linking.matching.batch import AMBIGUITY_MARGIN
from services.linking.matching.model import (
    Band,
    LinkageModel,
    Method,
    PairScore,
    deterministic,
    probability_of,
)
from services.linking.matching.records import PersonRecord as RecordData
from services.linking.matching.records import Prepared, features, prepare
from services.linking.matching.scoring import Candidates, Scorer
from services.linking.models import plumbing
from services.linking.repository import LinkingRepository
from shared import outbox
from shared.auth import Principal
from shared.errors import Conflict, NotFound
from shared.events.registry import Event
from shared.ids import uuid7

SERVICE = "linking"
AUTOMATIC = "linking"  # who decided an automatic link
MASH_SCOPE = "mash:triage"
PARENT_KINDS = frozenset({"parent", "non_resident_parent"})


@lru_cache(maxsize=8)
def load_model(path: Path | None, link: float | None, review: float | None) -> LinkageModel:
    return LinkageModel.load(path).with_thresholds(link, review)


# Resolving ------------------------------------------------------------------------------------


@dataclass
class Candidate:
    person_id: uuid.UUID
    record_id: uuid.UUID
    score: PairScore
    evidence: list[dict[str, object]]
    conflict: str | None


@dataclass
class Resolution:
    band: Band
    method: Method
    probability: float
    person_id: uuid.UUID | None  # the person to link to (band LINK) or the best candidate
    reason: str
    candidates: list[Candidate] = field(default_factory=list)


def record_data(record: models.PersonRecord | Any) -> RecordData:
    """The matching engine's view of a stored record (an ORM object or a row of its columns)."""
    return RecordData(
        record_id=str(record.id),
        source=record.source_agency,
        given_names=record.given_names,
        family_name=record.family_name,
        other_names=tuple(record.other_names or ()),
        date_of_birth=record.date_of_birth,
        dob_estimated=record.dob_estimated,
        expected_date=record.expected_date,
        sex=record.sex,
        address=record.address,
        postcode=record.postcode,
        nhs_number=record.nhs_number,
        upn=record.upn,
    )


def _evidence(
    model: LinkageModel, ready: Prepared, score: PairScore, other_given: str
) -> list[dict[str, object]]:
    # Built by hand: dataclasses.asdict deep-copies each field, and was a tenth of a resolve.
    return [
        {"comparison": item.comparison, "level": item.level, "weight": item.weight}
        for item in model.evidence(ready, score.levels, other_given)
    ]


SHOWN_CANDIDATES = 10
#: The candidate persons a resolve keeps, best first: as many as a search may list.
KEPT_CANDIDATES = 50


@dataclass
class Scored:
    """The candidates of one resolve, compared with the record: each one's levels and weight."""

    candidates: Candidates
    scorer: Scorer
    levels: list[tuple[int, ...]]
    weights: list[float]

    @classmethod
    def of(cls, model: LinkageModel, ready: Prepared, candidates: Candidates) -> Scored:
        scorer = Scorer(model, ready)
        levels = [scorer.levels(candidates, index) for index in range(len(candidates))]
        given = candidates.given_norm
        weights = [scorer.weight(found, given[index]) for index, found in enumerate(levels)]
        return cls(candidates, scorer, levels, weights)

    def rescore(self, index: int, moved: bool) -> None:
        self.levels[index] = self.scorer.levels(self.candidates, index, moved)
        self.weights[index] = self.scorer.weight(
            self.levels[index], self.candidates.given_norm[index]
        )

    def score(self, index: int) -> PairScore:
        levels, weight = self.levels[index], self.weights[index]
        return PairScore(
            weight=weight,
            probability=probability_of(weight),
            levels=levels,
            deterministic=deterministic(levels),
            conflict=self.scorer.conflict(self.candidates, index, levels),
        )


def rank(model: LinkageModel, ready: Prepared, scored: Scored) -> Resolution:
    """Persons by their best-scoring record (the best KEPT_CANDIDATES), and the band of the
    best. A person any of whose records conflicts with the one resolved (without a shared
    identifier) carries the conflict."""
    found = scored.candidates
    best: dict[uuid.UUID, tuple[tuple[bool, float], int]] = {}
    records_of: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index in range(len(found)):
        person_id = found.person_id[index]
        records_of[person_id].append(index)
        key = (deterministic(scored.levels[index]) is not None, scored.weights[index])
        held = best.get(person_id)
        if held is None or key > held[0]:
            best[person_id] = (key, index)
    # Only the best KEPT_CANDIDATES persons (after any linked by an identifier, which come
    # first) are kept, so only their records are checked for a conflict: the slowest resolves
    # hold hundreds of candidates that could never be shown.
    ordered = sorted(best.items(), key=lambda item: item[1][0], reverse=True)
    by_identifier = sum(1 for _, (key, _) in ordered if key[0])
    kept = ordered[: by_identifier + KEPT_CANDIDATES]
    ranked: list[Candidate] = []
    chosen: list[int] = []  # each ranked person's best record
    for person_id, (_, index) in kept:
        candidate = Candidate(person_id, found.id[index], scored.score(index), [], None)
        for other in records_of[person_id]:
            levels = scored.levels[other]
            if deterministic(levels) is None:
                reason = scored.scorer.conflict(found, other, levels)
                if reason is not None:
                    candidate.conflict = reason
                    break
        ranked.append(candidate)
        chosen.append(index)
    for shown, index in zip(ranked[:SHOWN_CANDIDATES], chosen, strict=False):
        shown.evidence = _evidence(model, ready, shown.score, found.given_norm[index])
    return _band(model, ranked)


def _band(model: LinkageModel, ranked: list[Candidate]) -> Resolution:
    thresholds = model.thresholds
    if not ranked:
        return Resolution(Band.NEW_PERSON, Method.NEW_PERSON, 0.0, None, "no candidates")
    top = ranked[0]
    if top.score.deterministic is not None:
        return Resolution(
            Band.LINK, top.score.deterministic, 1.0, top.person_id, "validated identifier", ranked
        )
    band = top.score.band(thresholds)
    if top.conflict is not None and band is Band.LINK:
        band = Band.REVIEW if top.score.probability >= thresholds.review else Band.NEW_PERSON
    if band is Band.LINK:
        # Another person it fits about as well (within odds of 99 to 1): twins, a parent and
        # child of one name. One it fits far worse is no rival (as in a batch).
        rivals = [
            c
            for c in ranked[1:]
            if c.score.probability >= thresholds.link
            and c.conflict is None
            and top.score.weight - c.score.weight < AMBIGUITY_MARGIN
        ]
        if rivals:
            return Resolution(
                Band.REVIEW,
                Method.NEW_PERSON,
                top.score.probability,
                top.person_id,
                "matches more than one person (twins, or a parent and child of one name?)",
                ranked,
            )
        return Resolution(
            Band.LINK, Method.PROBABILISTIC, top.score.probability, top.person_id, "", ranked
        )
    if band is Band.REVIEW:
        return Resolution(
            Band.REVIEW,
            Method.NEW_PERSON,
            top.score.probability,
            top.person_id,
            top.conflict or top.score.conflict or "in the review band",
            ranked,
        )
    return Resolution(
        Band.NEW_PERSON,
        Method.NEW_PERSON,
        top.score.probability,
        None,
        top.conflict or "below the review threshold",
        ranked,
    )


async def resolve(
    session: AsyncSession, model: LinkageModel, data: RecordData, max_block: int
) -> tuple[Prepared, list[str], Resolution]:
    ready = prepare(data)
    repository = LinkingRepository(session)
    rows = await repository.candidate_rows(blocking.query_keys(ready), max_block)
    scored = Scored.of(model, ready, Candidates(rows))
    for index in await _moved(repository, model, ready, scored):
        scored.rescore(index, moved=True)
    return ready, blocking.keys(ready), rank(model, ready, scored)


MOVE_CANDIDATES = 3  # the candidates (best first) whose homes a resolve looks for moves between


async def _moved(
    repository: LinkingRepository, model: LinkageModel, ready: Prepared, scored: Scored
) -> list[int]:
    """The candidates at homes joined to the record's by a move of the household that people
    other than the candidate's person show (``matching.moves``): a person held at both homes,
    or two persons' records at the two homes that match well on their own. As in a batch's
    second pass, the persons the record links to without any move are its own and show
    nothing. Only the few best candidates such a move could lift into the review band are
    looked at."""
    if not ready.homes or not len(scored.candidates):
        return []
    thresholds = model.thresholds
    residence = model.weights[cmp.RESIDENCE]
    review = math.log2(thresholds.review / (1 - thresholds.review))
    found = scored.candidates
    pairs = enumerate(zip(scored.levels, scored.weights, strict=True))
    lifted = sorted(
        (
            (weight - residence[levels[cmp.RESIDENCE]] + residence[moves.MOVED], index)
            for index, (levels, weight) in pairs
            if levels[cmp.RESIDENCE] > moves.MOVED
        ),
        reverse=True,
    )
    # A move matters only where it could change the outcome: lift a candidate of another
    # person than the best one into the review band, or to within the ambiguity margin of the
    # best (a rival). Behind a link on a shared identifier nothing can.
    best = max(
        range(len(found)),
        key=lambda i: (deterministic(scored.levels[i]) is not None, scored.weights[i]),
    )
    if deterministic(scored.levels[best]) is not None:
        return []
    if probability_of(scored.weights[best]) >= thresholds.link:
        # The best already links: only another person's candidate lifted near it (a rival)
        # could change that.
        floor = max(review, scored.weights[best] - AMBIGUITY_MARGIN)
        needing = [
            index
            for weight, index in lifted[:MOVE_CANDIDATES]
            if weight >= floor and found.person_id[index] != found.person_id[best]
        ]
    else:
        needing = [index for weight, index in lifted[:MOVE_CANDIDATES] if weight >= review]
    if not needing:
        return []
    own = {
        found.person_id[index]
        for index, weight in enumerate(scored.weights)
        if (deterministic(scored.levels[index]) or probability_of(weight) >= thresholds.link)
        and scored.score(index).band(thresholds) is Band.LINK
    }
    homes = set(ready.homes).union(*(found.homes[index] for index in needing))
    rows = {row[0]: row for row in await repository.records_at(sorted(homes))}  # by id
    neighbours = Candidates(list(rows.values()))
    household = moves.HouseholdMoves()
    homes_of: dict[uuid.UUID, set[str]] = defaultdict(set)
    for index, person_id in enumerate(neighbours.person_id):
        homes_of[person_id].update(neighbours.homes[index])
    for person_id, person_homes in homes_of.items():
        household.add_person(person_homes, person_id)

    def joined(index: int) -> bool:
        exclude = (found.person_id[index], *own)
        return household.joined(ready.homes, found.homes[index], exclude)

    rest = [index for index in needing if not joined(index)]
    if rest:
        # Two persons' records at the two homes that match on their own show a move too.
        here = set(ready.homes)
        there = set().union(*(found.homes[index] for index in rest)) - here
        local = [i for i in range(len(neighbours)) if not here.isdisjoint(neighbours.homes[i])]
        # The records away (not also here) by the sound of each name: only two records that
        # share the sound of the family or the given name are scored, so look those up rather
        # than try every pair (a busy pair of homes holds hundreds of records).
        by_sound: dict[tuple[int, str], list[int]] = defaultdict(list)
        for y in range(len(neighbours)):
            homes_y = neighbours.homes[y]
            if there.isdisjoint(homes_y) or not here.isdisjoint(homes_y):
                continue
            by_sound[(0, neighbours.family_sound[y])].append(y)
            by_sound[(1, neighbours.given_sound[y])].append(y)
        for x in local:
            person_x = neighbours.person_id[x]
            alike = sorted(
                {
                    *by_sound.get((0, neighbours.family_sound[x]), ()),
                    *by_sound.get((1, neighbours.given_sound[x]), ()),
                }
            )
            alike = [y for y in alike if neighbours.person_id[y] != person_x]
            if not alike:
                continue
            scorer = Scorer(model, neighbours.prepared(x))
            for y in alike:
                others = scorer.other_levels(neighbours, y, floor=review)
                if others is None or scorer.best_weight(others) < review:
                    continue  # below the review band whatever the names say
                levels = scorer.name_levels(neighbours, y) + others
                weight = scorer.weight(levels, neighbours.given_norm[y])
                if probability_of(weight) < thresholds.review:
                    continue
                shared = levels[cmp.NHS] == 0 or levels[cmp.UPN] == 0
                if (
                    deterministic(levels) is not None
                    or shared
                    or scorer.conflict(neighbours, y, levels) is None
                ):
                    household.add(
                        neighbours.homes[x],
                        neighbours.homes[y],
                        (neighbours.person_id[x], neighbours.person_id[y]),
                    )
                    if all(map(joined, rest)):
                        return needing  # every one joined: more support changes nothing
    return [index for index in needing if index not in rest or joined(index)]


# Recording a subject ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    source_type: str  # referral | contact
    source_id: uuid.UUID
    reference: str
    agency: str
    organisation: str


async def _emit(session: AsyncSession, event: Event, now: datetime) -> None:
    await outbox.append(session, plumbing, event, service=SERVICE, now=now)


async def record_subject(
    session: AsyncSession,
    model: LinkageModel,
    data: RecordData,
    *,
    subject_id: uuid.UUID | None,
    role: str,
    source: Source,
    school_urn: str | None,
    now: datetime,
    max_block: int,
) -> models.PersonRecord:
    """Store one subject as a person record, resolved to a person (new or existing)."""
    repository = LinkingRepository(session)
    if subject_id is not None:
        existing = await repository.record_by_subject(subject_id)
        if existing is not None:
            return existing  # the same subject again (a replayed event): nothing new
    ready, keys, resolution = await resolve(session, model, data, max_block)
    if resolution.band is Band.LINK and resolution.person_id is not None:
        person_id = resolution.person_id
        method, probability = resolution.method, resolution.probability
        evidence = resolution.candidates[0].evidence
    else:
        person_id = uuid7()
        await repository.add_person(
            models.Person(id=person_id, status="active", created_at=now, updated_at=now)
        )
        method, probability = Method.NEW_PERSON, resolution.probability
        evidence = resolution.candidates[0].evidence if resolution.candidates else []
    record = models.PersonRecord(
        id=uuid7(),
        subject_id=subject_id,
        source_type=source.source_type,
        source_id=source.source_id,
        source_reference=source.reference,
        source_agency=source.agency,
        source_organisation=source.organisation,
        role=role,
        given_names=data.given_names,
        family_name=data.family_name,
        other_names=list(data.other_names),
        date_of_birth=data.date_of_birth,
        dob_estimated=data.dob_estimated,
        expected_date=data.expected_date,
        sex=data.sex,
        address=data.address,
        postcode=ready.postcode or None,
        nhs_number=ready.nhs,
        upn=ready.upn,
        school_urn=school_urn,
        **features(ready),
        person_id=person_id,
        link_method=method.value,
        match_probability=round(probability, 6),
        link_evidence=evidence,
        linked_by=AUTOMATIC,
        linked_at=now,
        recorded_at=now,
    )
    await repository.add_record(record, [*keys, *(moves.home_key(home) for home in ready.homes)])
    await repository.add_history(
        [
            models.LinkHistory(
                record_id=record.id,
                person_id=person_id,
                previous_person_id=None,
                action="linked",
                method=method.value,
                match_probability=record.match_probability,
                evidence=evidence,
                decided_by=AUTOMATIC,
                reason=resolution.reason or None,
                at=now,
            )
        ]
    )
    review_pending = False
    if resolution.band is Band.REVIEW:
        thresholds = model.thresholds
        for candidate in resolution.candidates[:3]:
            if candidate.person_id == person_id:
                continue
            if (
                candidate.score.probability < thresholds.review
                and candidate is not (resolution.candidates[0])
            ):
                continue
            review_id = uuid7()
            added = await repository.add_review(
                models.ReviewItem(
                    id=review_id,
                    record_id=record.id,
                    candidate_person_id=candidate.person_id,
                    candidate_record_id=candidate.record_id,
                    match_probability=round(candidate.score.probability, 6),
                    reason=(candidate.conflict or resolution.reason)[:200],
                    evidence=candidate.evidence,
                    status="open",
                    created_at=now,
                )
            )
            if added:
                review_pending = True
                await _emit(
                    session,
                    LinkReviewRequired(
                        review_id=review_id,
                        record_id=record.id,
                        subject_id=subject_id,
                        record_person_id=person_id,
                        candidate_person_id=candidate.person_id,
                        match_probability=round(candidate.score.probability, 6),
                        created_at=now,
                    ),
                    now,
                )
    await _emit(
        session,
        SubjectLinked(
            record_id=record.id,
            subject_id=subject_id,
            person_id=person_id,
            method=method.value,
            match_probability=record.match_probability,
            review_pending=review_pending,
            source_type=source.source_type,
            source_id=source.source_id,
            linked_at=now,
            decided_by=AUTOMATIC,
        ),
        now,
    )
    await infer_co_residence(session, record, now)
    return record


async def infer_co_residence(
    session: AsyncSession, record: models.PersonRecord, now: datetime
) -> uuid.UUID | None:
    """Shared addresses over time: a person not yet in any household, recorded at the postcode
    of a household whose members share their family name, joins that household (only when
    exactly one such household exists: a postcode holds a dozen homes)."""
    if not record.postcode or not record.family_name:
        return None
    repository = LinkingRepository(session)
    if await repository.households_of([record.person_id]):
        return None
    neighbours = await repository.persons_at(
        record.postcode, record.family_name, exclude=record.person_id
    )
    households = await repository.households_of(neighbours)
    if len(households) != 1:
        return None
    household_id = households[0]
    await repository.add_member(household_id, record.person_id, record.role, now)
    await emit_household(session, household_id, now)
    return household_id


# Review -----------------------------------------------------------------------------------


async def accept_review(
    session: AsyncSession, review_id: uuid.UUID, decider: Principal, note: str | None, now: datetime
) -> models.ReviewItem:
    repository = LinkingRepository(session)
    item = await repository.review(review_id, lock=True)
    if item is None:
        raise NotFound(f"No review item {review_id}")
    if item.status != "open":
        raise Conflict(f"review item {review_id} is already {item.status}")
    record = await repository.record(item.record_id)
    assert record is not None
    survivor = await _active(repository, item.candidate_person_id)
    if record.person_id != survivor:
        await merge_persons(
            session,
            survivor_id=survivor,
            merged_id=record.person_id,
            by=decider.subject,
            reason=f"review {review_id} accepted" + (f": {note}" if note else ""),
            now=now,
            method=Method.REVIEW_ACCEPTED,
        )
    item.status, item.decided_at, item.decided_by = "accepted", now, decider.subject
    item.decision_note = note
    await session.flush()
    await _emit(
        session,
        SubjectLinked(
            record_id=record.id,
            subject_id=record.subject_id,
            person_id=survivor,
            method=Method.REVIEW_ACCEPTED.value,
            match_probability=item.match_probability,
            source_type=record.source_type,
            source_id=record.source_id,
            linked_at=now,
            decided_by=decider.subject,
        ),
        now,
    )
    await _emit(session, _decided(item, "accepted", decider, now), now)
    return item


async def reject_review(
    session: AsyncSession, review_id: uuid.UUID, decider: Principal, note: str | None, now: datetime
) -> models.ReviewItem:
    repository = LinkingRepository(session)
    item = await repository.review(review_id, lock=True)
    if item is None:
        raise NotFound(f"No review item {review_id}")
    if item.status != "open":
        raise Conflict(f"review item {review_id} is already {item.status}")
    item.status, item.decided_at, item.decided_by = "rejected", now, decider.subject
    item.decision_note = note
    record = await repository.record(item.record_id)
    assert record is not None
    await repository.add_history(
        [
            models.LinkHistory(
                record_id=record.id,
                person_id=record.person_id,
                previous_person_id=None,
                action="review_rejected",
                method=Method.NEW_PERSON.value,
                match_probability=item.match_probability,
                evidence=item.evidence,
                decided_by=decider.subject,
                reason=note,
                at=now,
            )
        ]
    )
    await _emit(session, _decided(item, "rejected", decider, now), now)
    return item


def _decided(
    item: models.ReviewItem, decision: str, decider: Principal, now: datetime
) -> LinkReviewDecided:
    return LinkReviewDecided(
        review_id=item.id,
        record_id=item.record_id,
        candidate_person_id=item.candidate_person_id,
        decision=decision,
        decided_by=decider.subject,
        decided_at=now,
    )


async def _active(repository: LinkingRepository, person_id: uuid.UUID) -> uuid.UUID:
    """The person a (possibly merged) person id stands for now."""
    seen = set()
    while True:
        person = await repository.person(person_id)
        if person is None:
            raise NotFound(f"No person {person_id}")
        if person.status != "merged" or person.merged_into is None or person_id in seen:
            return person.id
        seen.add(person_id)
        person_id = person.merged_into


# Merge and unmerge ------------------------------------------------------------------------


async def merge_persons(
    session: AsyncSession,
    *,
    survivor_id: uuid.UUID,
    merged_id: uuid.UUID,
    by: str,
    reason: str,
    now: datetime,
    method: Method = Method.MERGE,
) -> models.Merge:
    """Every record, relationship and household membership of ``merged_id`` moves to
    ``survivor_id``; what moved is kept so that ``unmerge`` can put it back exactly."""
    if survivor_id == merged_id:
        raise Conflict("a person cannot be merged into itself")
    repository = LinkingRepository(session)
    first, second = sorted([survivor_id, merged_id])  # lock in one order: no deadlock
    persons = {pid: await repository.person(pid, lock=True) for pid in (first, second)}
    survivor, merged = persons[survivor_id], persons[merged_id]
    if survivor is None or merged is None:
        raise NotFound(f"No person {survivor_id if survivor is None else merged_id}")
    for person in (survivor, merged):
        if person.status != "active":
            raise Conflict(f"person {person.id} was merged into {person.merged_into}")
    records = await repository.records_of(merged_id)
    record_ids = await repository.move_records([r.id for r in records], merged_id, survivor_id)
    relationship_ids = await repository.repoint_relationships(merged_id, survivor_id)
    households = await repository.move_memberships(merged_id, survivor_id)
    merged.status, merged.merged_into, merged.updated_at = "merged", survivor_id, now
    survivor.updated_at = now
    merge = models.Merge(
        id=uuid7(),
        survivor_person_id=survivor_id,
        merged_person_id=merged_id,
        record_ids=[str(record_id) for record_id in record_ids],
        relationship_ids=relationship_ids,
        households=households,
        reason=reason,
        merged_by=by,
        merged_at=now,
    )
    await repository.add_merge(merge)
    await repository.add_history(
        [
            models.LinkHistory(
                record_id=record_id,
                person_id=survivor_id,
                previous_person_id=merged_id,
                action="merged",
                method=method.value,
                match_probability=None,
                evidence=[{"merge_id": str(merge.id)}],
                decided_by=by,
                reason=reason,
                at=now,
            )
            for record_id in record_ids
        ]
    )
    await repository.close_reviews_between(survivor_id, merged_id, now, by)
    await _emit(
        session,
        PersonsMerged(
            merge_id=merge.id,
            survivor_person_id=survivor_id,
            merged_person_id=merged_id,
            record_ids=record_ids,
            reason=reason,
            merged_by=by,
            merged_at=now,
        ),
        now,
    )
    for entry in households:
        await emit_household(session, uuid.UUID(str(entry["household_id"])), now)
    return merge


async def unmerge(
    session: AsyncSession, merge_id: uuid.UUID, by: str, reason: str, now: datetime
) -> models.Merge:
    repository = LinkingRepository(session)
    merge = await repository.merge(merge_id, lock=True)
    if merge is None:
        raise NotFound(f"No merge {merge_id}")
    if merge.unmerged_at is not None:
        raise Conflict(f"merge {merge_id} was already undone")
    survivor = await repository.person(merge.survivor_person_id, lock=True)
    restored = await repository.person(merge.merged_person_id, lock=True)
    assert survivor is not None and restored is not None
    if survivor.status != "active":
        raise Conflict(
            f"person {survivor.id} has since been merged into {survivor.merged_into}: "
            "undo that merge first"
        )
    record_ids = [uuid.UUID(value) for value in merge.record_ids]
    moved = await repository.move_records(record_ids, survivor.id, restored.id)
    await repository.repoint_relationships(
        survivor.id, restored.id, only=list(merge.relationship_ids)
    )
    for entry in merge.households:
        household_id = uuid.UUID(str(entry["household_id"]))
        member = next(
            (m for m in await repository.members(household_id) if m.person_id == survivor.id),
            None,
        )
        await repository.add_member(
            household_id, restored.id, member.role if member else "child", now
        )
        if entry.get("joined"):
            await repository.remove_member(household_id, survivor.id)
    restored.status, restored.merged_into, restored.updated_at = "active", None, now
    survivor.updated_at = now
    merge.unmerged_at, merge.unmerged_by, merge.unmerge_reason = now, by, reason
    await repository.add_history(
        [
            models.LinkHistory(
                record_id=record_id,
                person_id=restored.id,
                previous_person_id=survivor.id,
                action="unmerged",
                method=Method.UNMERGE.value,
                match_probability=None,
                evidence=[{"merge_id": str(merge.id)}],
                decided_by=by,
                reason=reason,
                at=now,
            )
            for record_id in moved
        ]
    )
    await _emit(
        session,
        PersonsUnmerged(
            merge_id=merge.id,
            survivor_person_id=survivor.id,
            restored_person_id=restored.id,
            record_ids=moved,
            reason=reason,
            unmerged_by=by,
            unmerged_at=now,
        ),
        now,
    )
    for entry in merge.households:
        await emit_household(session, uuid.UUID(str(entry["household_id"])), now)
    return merge


# Households and relationships -------------------------------------------------------------


@dataclass(frozen=True)
class ReportedLink:
    """``person`` is the ``kind`` of ``child`` (from a referral's family section)."""

    person: uuid.UUID
    child: uuid.UUID
    kind: str
    parental_responsibility: bool | None
    lives_with: bool | None


async def apply_family(
    session: AsyncSession,
    *,
    children: Sequence[uuid.UUID],
    reported: Sequence[ReportedLink],
    co_resident: Iterable[uuid.UUID],
    source_reference: str,
    now: datetime,
) -> uuid.UUID | None:
    """Record the reported relationships, infer siblings, and put the children and the adults
    they live with into one household (joining an existing one where any of them is already
    in one). Returns the household."""
    repository = LinkingRepository(session)
    for link in reported:
        if link.person == link.child:
            continue
        await repository.upsert_relationship(
            person_id=link.person,
            related_person_id=link.child,
            kind=link.kind,
            parental_responsibility=link.parental_responsibility,
            lives_with=link.lives_with,
            inferred=False,
            source_reference=source_reference,
            now=now,
        )
    await infer_siblings(session, children, source_reference, now)
    return await join_household(session, children=children, adults=co_resident, now=now)


def home(postcode: str | None, address_lines: Sequence[str]) -> tuple[str, str] | None:
    """Where someone lives, as far as telling two homes apart needs: the postcode and the house
    (the first line's number, or the first line); ``None`` without a postcode and a first line."""
    if not postcode or not address_lines or not address_lines[0].strip():
        return None
    first = address_lines[0].upper().replace(",", " ").split()
    house = next((part for part in first if any(ch.isdigit() for ch in part)), " ".join(first))
    return postcode.upper().replace(" ", ""), house


async def join_household(
    session: AsyncSession,
    *,
    children: Sequence[uuid.UUID],
    adults: Iterable[uuid.UUID],
    now: datetime,
) -> uuid.UUID | None:
    """Put the children and the adults they live with into one household, joining an existing
    one where any of them is already in one. Returns the household."""
    repository = LinkingRepository(session)
    residents = list(dict.fromkeys([*children, *adults]))
    if not residents:
        return None
    existing = await repository.households_of(residents)
    if existing:
        household_id = existing[0]
    else:
        household_id = uuid7()
        await repository.add_household(
            models.Household(id=household_id, created_at=now, updated_at=now)
        )
    child_set = set(children)
    for person in residents:
        role = "child" if person in child_set else "adult"
        await repository.add_member(household_id, person, role, now)
    household = await repository.household(household_id)
    assert household is not None
    household.updated_at = now
    await emit_household(session, household_id, now)
    return household_id


async def infer_siblings(
    session: AsyncSession, children: Sequence[uuid.UUID], source_reference: str, now: datetime
) -> None:
    """Children named together are siblings; children who share a parent are siblings, or
    half-siblings where each has another parent the other does not."""
    repository = LinkingRepository(session)
    relationships = await repository.relationships_of(list(children))
    parents: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for relationship in relationships:
        if relationship.kind in PARENT_KINDS:
            parents[relationship.related_person_id].add(relationship.person_id)
    # Other children of the same parents, anywhere in the partnership.
    parent_ids = {parent for child in children for parent in parents[child]}
    more = await repository.relationships_of(list(parent_ids))
    for relationship in more:
        if relationship.kind in PARENT_KINDS:
            parents[relationship.related_person_id].add(relationship.person_id)
    everyone = set(children) | set(parents)
    siblings: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
    for a in children:
        for b in everyone:
            if a == b:
                continue
            shared = parents[a] & parents[b]
            if shared:
                half = bool(parents[a] - shared) and bool(parents[b] - shared)
                siblings[(a, b)] = "half_sibling" if half else "sibling"
            elif b in children:
                siblings[(a, b)] = "sibling"
    for (a, b), kind in siblings.items():
        for x, y in ((a, b), (b, a)):
            await repository.upsert_relationship(
                person_id=x,
                related_person_id=y,
                kind=kind,
                parental_responsibility=None,
                lives_with=None,
                inferred=True,
                source_reference=source_reference,
                now=now,
            )


async def emit_household(session: AsyncSession, household_id: uuid.UUID, now: datetime) -> None:
    repository = LinkingRepository(session)
    members = await repository.members(household_id)
    ids = [member.person_id for member in members]
    relationships = [
        r
        for r in await repository.relationships_of(ids)
        if r.person_id in ids and r.related_person_id in ids
    ]
    await _emit(
        session,
        HouseholdUpdated(
            household_id=household_id,
            members=[HouseholdMember(person_id=m.person_id, role=m.role) for m in members],
            relationships=[
                RelationshipOut(
                    person_id=r.person_id,
                    related_person_id=r.related_person_id,
                    kind=r.kind,
                    parental_responsibility=r.parental_responsibility,
                    lives_with=r.lives_with,
                    inferred=r.inferred,
                )
                for r in relationships
            ],
            updated_at=now,
        ),
        now,
    )


# Access -----------------------------------------------------------------------------------


async def record_access(
    session: AsyncSession,
    principal: Principal,
    action: str,
    object_type: str,
    *object_ids: str,
    outcome: str = "allowed",
) -> None:
    """One access-log row per object disclosed, written in one statement."""
    await LinkingRepository(session).log_access(
        [
            {
                "principal": principal.subject,
                "organisation_code": principal.organisation_code,
                "agency": principal.agency,
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "outcome": outcome,
            }
            for object_id in object_ids
        ]
    )


def estimated_birth(age_years: int | None, on: datetime) -> date | None:
    """A date of birth standing for an estimated age: 1 July of the year it implies."""
    if age_years is None:
        return None
    return date(on.year - age_years, 7, 1)
