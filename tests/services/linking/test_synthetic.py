"""The synthetic partnership: reproducible, with the families, errors and ground truth the
benchmark and the traps need."""

from __future__ import annotations

from collections import Counter

from services.linking.matching import batch, evaluation
from services.linking.matching.model import LinkageModel
from services.linking.matching.records import prepare
from services.linking.synthetic import generate
from shared.identifiers import is_valid_nhs_number, is_valid_postcode, is_valid_upn


def test_the_same_seed_gives_the_same_partnership() -> None:
    first = [(g.record, g.person_id) for g in generate(2_000, seed=11).records]
    again = [(g.record, g.person_id) for g in generate(2_000, seed=11).records]
    other = [(g.record, g.person_id) for g in generate(2_000, seed=12).records]
    assert first == again
    assert first != other


def test_the_partnership_has_the_families_and_difficulties_linking_must_handle() -> None:
    partnership = generate(20_000, seed=3)
    records = partnership.records
    assert len(records) == 20_000
    tags = Counter(tag for generated in records for tag in generated.tags)
    for needed in ("nickname", "typo", "moved", "name_change", "unborn", "swapped", "dob_error"):
        assert tags[needed] > 20, needed
    kinds = Counter(r.kind for h in partnership.households for r in h.relationships)
    for kind in ("parent", "non_resident_parent", "step_parent", "sibling", "half_sibling"):
        assert kinds[kind] > 0, kind
    persons = list(partnership.persons)
    twins = Counter((p.household_id, p.dob) for p in persons if p.role == "child").most_common(1)[
        0
    ][1]
    assert twins >= 2
    # Several agencies see each person, each with its own habits.
    per_person = Counter(g.person_id for g in records)
    assert 2.0 < len(records) / len(per_person) < 4.0
    assert {g.record.source for g in records} == {"school", "health", "police", "social_care"}


def test_identifiers_and_postcodes_are_well_formed() -> None:
    for generated in generate(3_000, seed=5).records:
        record = generated.record
        if record.nhs_number:
            assert is_valid_nhs_number(record.nhs_number)
        if record.upn:
            assert is_valid_upn(record.upn)
        if record.postcode:
            assert is_valid_postcode(record.postcode)


def test_the_shipped_model_links_a_fresh_partnership_accurately() -> None:
    partnership = generate(10_000, seed=99)
    prepared = [prepare(generated.record) for generated in partnership.records]
    labels, _ = batch.link(prepared, LinkageModel.load(), workers=1)
    scores = evaluation.pairwise([g.person_id for g in partnership.records], labels)
    assert scores.precision >= 0.998
    assert scores.recall >= 0.93


def test_forked_workers_score_exactly_what_one_process_scores() -> None:
    """score_all's pool (2 workers, 5,000 records a chunk, each sending back only the best
    probabilities of the records it touched) gives the same edges and the same best
    probability for every record as scoring in one process."""
    prepared = [prepare(g.record) for g in generate(20_000, seed=21).records]
    model = LinkageModel.load()
    alone_edges, alone_best = batch.score_all(prepared, model, workers=1)
    pooled_edges, pooled_best = batch.score_all(prepared, model, workers=2)
    assert len(alone_edges) > 10_000
    assert sorted(pooled_edges, key=lambda e: (e.left, e.right)) == sorted(
        alone_edges, key=lambda e: (e.left, e.right)
    )
    assert pooled_best == alone_best
    assert sum(1 for value in alone_best if value > 0) > 15_000
