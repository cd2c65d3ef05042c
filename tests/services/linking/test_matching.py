"""The matching engine on the traps that matter most in children's records, and on the
domain comparisons, scored with the shipped (trained) model."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import pytest

from services.linking.matching import batch, blocking, names, scoring
from services.linking.matching import comparisons as cmp
from services.linking.matching.model import (
    GIVEN_NICKNAME,
    Band,
    LinkageModel,
    Method,
    conflict,
    nickname_constant,
)
from services.linking.matching.records import PersonRecord, Prepared, features, prepare, restore
from services.linking.synthetic import generate

HOME = {"family_name": "Smith", "postcode": "DE1 2AB", "address": "12 Oak Road, Derby"}


@pytest.fixture(scope="module")
def model() -> LinkageModel:
    return LinkageModel.load()


def record(record_id: str = "r", **fields: object) -> Prepared:
    return prepare(PersonRecord(record_id=record_id, **fields))  # type: ignore[arg-type]


def band(model: LinkageModel, a: Prepared, b: Prepared) -> Band:
    return model.score(a, b).band(model.thresholds)


# The traps -----------------------------------------------------------------------------------


def test_twins_are_never_linked_though_they_share_family_name_birthday_and_home(
    model: LinkageModel,
) -> None:
    oliver = record(given_names="Oliver", date_of_birth=date(2018, 5, 1), sex="male", **HOME)
    amelia = record(given_names="Amelia", date_of_birth=date(2018, 5, 1), sex="female", **HOME)
    score = model.score(oliver, amelia)
    assert score.band(model.thresholds) is Band.NEW_PERSON
    assert score.conflict is not None and "twins" in score.conflict


def test_twins_with_names_one_letter_apart_are_two_real_names_not_a_typo(
    model: LinkageModel,
) -> None:
    jack = record(given_names="Jack", date_of_birth=date(2018, 5, 1), sex="male", **HOME)
    jake = record(given_names="Jake", date_of_birth=date(2018, 5, 1), sex="male", **HOME)
    score = model.score(jack, jake)
    # Everything else agrees, so the weights alone would link them: the rule forbids it.
    assert score.probability > model.thresholds.link
    assert score.band(model.thresholds) is Band.NEW_PERSON


def test_a_typo_of_a_name_is_not_mistaken_for_a_twin(model: LinkageModel) -> None:
    ivy = record(given_names="Isabella", date_of_birth=date(2018, 5, 1), sex="female", **HOME)
    typo = record(given_names="Isabelal", date_of_birth=date(2018, 5, 1), sex="female", **HOME)
    assert band(model, ivy, typo) is Band.LINK


def test_siblings_sharing_family_name_and_address_are_not_linked(model: LinkageModel) -> None:
    oliver = record(given_names="Oliver", date_of_birth=date(2016, 5, 1), **HOME)
    harry = record(given_names="Harry", date_of_birth=date(2017, 8, 11), **HOME)
    assert band(model, oliver, harry) is Band.NEW_PERSON


def test_a_parent_and_child_of_one_name_are_not_linked(model: LinkageModel) -> None:
    mother = record(given_names="Grace", date_of_birth=date(1985, 5, 1), sex="female", **HOME)
    daughter = record(given_names="Grace", date_of_birth=date(2012, 8, 11), sex="female", **HOME)
    assert band(model, mother, daughter) is Band.NEW_PERSON


def test_an_unborn_child_joins_the_born_child(model: LinkageModel) -> None:
    unborn = record(given_names="Baby", expected_date=date(2025, 3, 1), **HOME)
    born = record(given_names="Ava", date_of_birth=date(2025, 2, 20), sex="female", **HOME)
    score = model.score(unborn, born)
    assert score.levels[cmp.GIVEN] == cmp.NULL  # a placeholder is no evidence against
    assert cmp.DOB_LEVELS[score.levels[cmp.DOB]].startswith("expected date")
    assert score.band(model.thresholds) is Band.LINK


def test_an_unborn_sibling_is_not_the_older_child(model: LinkageModel) -> None:
    unborn = record(given_names="Unborn", expected_date=date(2026, 3, 1), **HOME)
    older = record(given_names="Ava", date_of_birth=date(2022, 2, 20), **HOME)
    assert band(model, unborn, older) is Band.NEW_PERSON


def test_a_birth_year_one_out_is_no_other_pregnancy(model: LinkageModel) -> None:
    # 2019-03-18 written 2018-03-18: a typed year, not a child born a year before the due date.
    unborn = record(given_names="Unborn", expected_date=date(2019, 4, 7), **HOME)
    slipped = record(given_names="Olivia", date_of_birth=date(2018, 3, 18), **HOME)
    assert conflict(unborn, slipped, cmp.levels(unborn, slipped)) is None
    far = record(given_names="Olivia", date_of_birth=date(2018, 1, 2), **HOME)
    assert conflict(unborn, far, cmp.levels(unborn, far)) is not None
    # The date still disagrees: no link on it.
    assert band(model, unborn, slipped) is Band.NEW_PERSON


def test_a_baby_record_that_fits_both_twins_joins_neither_and_twins_stay_apart(
    model: LinkageModel,
) -> None:
    records = [
        record("unborn", given_names="Baby", expected_date=date(2024, 6, 10), **HOME),
        record("a1", given_names="Oscar", date_of_birth=date(2024, 6, 1), sex="male", **HOME),
        record("a2", given_names="Oscar", date_of_birth=date(2024, 6, 1), **HOME),
        record("b1", given_names="Ruby", date_of_birth=date(2024, 6, 1), sex="female", **HOME),
        record("b2", given_names="Ruby", date_of_birth=date(2024, 6, 1), **HOME),
    ]
    labels, _ = batch.link(records, model, workers=1)
    assert labels[1] == labels[2]
    assert labels[3] == labels[4]
    assert labels[1] != labels[3]
    assert labels[0] not in (labels[1], labels[3])


@pytest.mark.parametrize("placeholder", ["Baby", "Unborn", "Baby of Jane", "NK", "Unknown", ""])
def test_placeholder_given_names_are_no_evidence(placeholder: str) -> None:
    assert names.is_placeholder(names.normalise(placeholder))
    assert record(given_names=placeholder, family_name="Smith").given == ""


# Deterministic identifiers -------------------------------------------------------------------


def test_a_shared_valid_nhs_number_links_deterministically_despite_a_new_name(
    model: LinkageModel,
) -> None:
    a = record(given_names="Kayleigh", family_name="Brown", nhs_number="943 476 5919")
    b = record(given_names="Kayleigh", family_name="Okafor", nhs_number="9434765919")
    score = model.score(a, b)
    assert score.deterministic is Method.NHS_NUMBER
    assert score.band(model.thresholds) is Band.LINK


def test_different_valid_nhs_numbers_are_strong_evidence_against(model: LinkageModel) -> None:
    a = record(given_names="Maya", date_of_birth=date(2016, 5, 4), nhs_number="9434765919", **HOME)
    b = record(given_names="Maya", date_of_birth=date(2016, 5, 4), nhs_number="4010232137", **HOME)
    score = model.score(a, b)
    assert model.weights[cmp.NHS][1] < -10
    assert score.band(model.thresholds) is Band.NEW_PERSON


def test_an_nhs_number_failing_modulus_11_is_ignored_not_trusted() -> None:
    bad = record(given_names="Maya", family_name="Smith", nhs_number="9434765918")
    assert bad.nhs is None
    assert any("modulus 11" in problem for problem in bad.problems)


def test_a_shared_upn_links_but_a_temporary_upn_is_no_evidence_against(
    model: LinkageModel,
) -> None:
    a = record(given_names="Leo", family_name="Hill", upn="L938200124001")
    b = record(given_names="Leo", family_name="Hill", upn="l938200124001")
    assert model.score(a, b).deterministic is Method.UPN
    temporary = record(given_names="Leo", family_name="Hill", upn="X93820012400A")
    assert temporary.upn_temporary
    assert cmp.upn(a, temporary) == cmp.NULL


def test_an_identifier_on_the_wrong_child_goes_to_a_person_to_decide(model: LinkageModel) -> None:
    a = record(given_names="Maya", date_of_birth=date(2016, 5, 4), nhs_number="9434765919")
    b = record(given_names="Ralph", date_of_birth=date(1971, 1, 9), nhs_number="9434765919")
    score = model.score(a, b)
    assert score.deterministic is None
    assert score.band(model.thresholds) is Band.REVIEW


# The comparisons -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("William", "William", 0),
        ("William", "Bill", 2),
        ("Elizabeth", "Liz", 2),
        ("Alfred", "Alfie", 2),
        ("Alfred", "Ahlfie", 2),  # a nickname with a typo
        ("Thomas John", "John", 3),  # known by a middle name
        ("Isabella", "Isabela", 4),
        ("Sophie", "Sofie", 5),
        ("Aisha", "Ayesha", 6),
        ("Jatk", "Jacs", 7),  # one name mistyped twice
        ("Oliver", "Harry", 8),
    ],
)
def test_given_name_levels(left: str, right: str, level: int) -> None:
    a = record(given_names=left, family_name="Smith")
    b = record(given_names=right, family_name="Smith")
    assert cmp.given_name(a, b) == level, cmp.GIVEN_LEVELS[cmp.given_name(a, b)]


def test_given_and_family_names_written_the_other_way_round(model: LinkageModel) -> None:
    a = record(given_names="Harris", family_name="Elsie", date_of_birth=date(1988, 1, 17))
    b = record(given_names="Elsie", family_name="Harris", date_of_birth=date(1988, 1, 17))
    assert cmp.given_name(a, b) == 1
    assert cmp.family_name(a, b) == 1
    assert band(model, a, b) is Band.LINK


@pytest.mark.parametrize(
    ("left", "right", "others", "level"),
    [
        ("Smith-Jones", "Smith", (), 2),
        ("Smith Jones", "Jones", (), 2),
        ("Okafor", "Brown", ("Brown",), 3),  # a known earlier name
        ("Smyth", "Smith", (), 4),
        ("Jones", "Patel", (), 7),
    ],
)
def test_family_name_levels(left: str, right: str, others: tuple[str, ...], level: int) -> None:
    a = record(given_names="Ava", family_name=left, other_names=others)
    b = record(given_names="Ava", family_name=right)
    assert cmp.family_name(a, b) == level


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        (date(2015, 3, 4), date(2015, 3, 4), 0),
        (date(2015, 3, 4), date(2015, 4, 3), 1),  # day and month swapped
        (date(2015, 3, 4), date(2015, 3, 14), 2),  # one digit
        (date(2015, 3, 4), date(2016, 3, 4), 2),
        (date(2015, 3, 4), date(2015, 11, 30), 5),  # same year
        (date(2015, 3, 4), date(2009, 7, 30), 6),
    ],
)
def test_date_of_birth_levels(left: date, right: date, level: int) -> None:
    a = record(given_names="Ava", date_of_birth=left)
    b = record(given_names="Ava", date_of_birth=right)
    assert cmp.date_of_birth(a, b) == level


def test_an_estimated_age_agrees_within_two_years() -> None:
    estimated = record(given_names="Ava", date_of_birth=date(2014, 7, 1), dob_estimated=True)
    exact = record(given_names="Ava", date_of_birth=date(2015, 11, 30))
    assert cmp.date_of_birth(estimated, exact) == 4


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("DE1 2AB", "de12ab", 1),
        ("DE1 2AB", "DE1 2XY", 4),  # sector
        ("DE1 2AB", "DE1 7XY", 5),  # outward code
        ("DE1 2AB", "NG7 2XY", 6),
    ],
)
def test_postcode_levels(left: str, right: str, level: int) -> None:
    assert cmp.residence(record(postcode=left), record(postcode=right)) == level


def test_homes_joined_by_a_move_of_the_household_agree_on_where_someone_lived(
    model: LinkageModel,
) -> None:
    before = record(given_names="Ava", date_of_birth=date(2015, 3, 4), postcode="DE1 2AB")
    after = record(given_names="Ava", date_of_birth=date(2015, 3, 4), postcode="NG7 2XY")
    assert cmp.residence(before, after, moved=True) == cmp.RESIDENCE_LEVELS.index(
        "different homes, joined by a move of the household"
    )
    assert model.score(before, after, moved=True).weight > model.score(before, after).weight + 10


def test_a_move_found_by_one_pass_supports_the_next(
    model: LinkageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A household of seed 1 seen at two homes. Mia's records at the two homes match on their
    own only into the review band; Mark's (a middle name, a birthday one digit out) not even
    that. Mia's near miss shows the move, so the first pass of rescoring links Mark across the
    homes; only then is someone *other than Mia* at both homes, and the next pass links her."""
    old = {"address": "58 Sycamore Avenue, Swadlincote", "postcode": "DE14 4SF"}
    new = {"address": "78 Park Close, Ashbourne", "postcode": "DE4 5FH"}
    mia = {"given_names": "Mia", "family_name": "Smith", "date_of_birth": date(2016, 12, 28)}
    mark = {"family_name": "Smith", "sex": "male"}
    records = [
        record("mia-new", source="health", sex="female", **mia, **new),
        record("rebecca", given_names="Rebecca", family_name="Smith", sex="female", **old),
        record(
            "mark-old", given_names="Mark Charlie", date_of_birth=date(1985, 8, 28), **mark, **old
        ),
        record("mia-old", source="school", sex="female", **mia, **old),
        record("mark-new", given_names="Mark", date_of_birth=date(1985, 8, 29), **mark, **new),
        record("mia-old-upn", source="school", sex="female", upn="C926571736551", **mia, **old),
    ]
    mia_apart = model.score(records[0], records[3])
    assert mia_apart.band(model.thresholds) is Band.REVIEW
    assert model.score(records[2], records[4]).probability < model.thresholds.review
    assert model.score(records[2], records[4], moved=True).band(model.thresholds) is Band.LINK
    assert model.score(records[0], records[3], moved=True).band(model.thresholds) is Band.LINK

    with monkeypatch.context() as patch:
        patch.setattr(batch, "MOVE_PASSES", 1)
        labels, _ = batch.link(records, model, workers=1)
        assert labels[2] == labels[4]  # Mark, linked by Mia's near miss
        assert labels[0] != labels[3]  # Mia: the only move shown was her own
    labels, _ = batch.link(records, model, workers=1)
    assert labels[2] == labels[4]
    assert labels[0] == labels[3] == labels[5]
    assert labels[1] not in (labels[0], labels[2])
    assert labels[0] != labels[2]


def test_the_same_address_and_postcode_is_the_strongest_residence_level() -> None:
    a = record(postcode="DE1 2AB", address="12 Oak Road, Derby")
    b = record(postcode="DE1 2AB", address="12, Oak Road Derby")
    assert cmp.residence(a, b) == 0


def test_common_names_count_for_less_than_rare_ones(model: LinkageModel) -> None:
    smiths = model.score(
        record(given_names="Olivia", family_name="Smith"),
        record(given_names="Olivia", family_name="Smith"),
    )
    rare = model.score(
        record(given_names="Olivia", family_name="Featherstone"),
        record(given_names="Olivia", family_name="Featherstone"),
    )
    assert rare.weight > smiths.weight + 2


def test_a_nickname_of_a_rare_name_counts_for_more_than_one_of_a_common_name(
    model: LinkageModel,
) -> None:
    """The nickname level is weighed by the names' frequencies, as exact names are."""
    born = {"date_of_birth": date(2015, 3, 4), **HOME}
    tilly = model.score(
        record("a", given_names="Tilly", **born), record("b", given_names="Matilda", **born)
    )
    ollie = model.score(
        record("a", given_names="Ollie", **born), record("b", given_names="Olivia", **born)
    )
    assert tilly.levels[cmp.GIVEN] == ollie.levels[cmp.GIVEN] == GIVEN_NICKNAME
    assert model.nickname_weight("TILLY", "MATILDA") > model.nickname_weight("OLLIE", "OLIVIA") + 3
    assert tilly.weight - ollie.weight == pytest.approx(
        model.nickname_weight("TILLY", "MATILDA") - model.nickname_weight("OLLIE", "OLIVIA")
    )
    # Symmetric, and below an exact match on the commoner name.
    assert model.nickname_weight("MATILDA", "TILLY") == model.nickname_weight("TILLY", "MATILDA")
    assert model.nickname_weight("OLLIE", "OLIVIA") < model.exact_weight(cmp.GIVEN, "OLIVIA")
    # A nickname with a typo is the level's own weight, as is any pair of unrelated names.
    pooled = model.weights[cmp.GIVEN][GIVEN_NICKNAME]
    assert model.nickname_weight("AHLFIE", "ALFRED") == pooled
    typo = model.score(
        record("a", given_names="Ahlfie", **born), record("b", given_names="Alfred", **born)
    )
    assert typo.levels[cmp.GIVEN] == GIVEN_NICKNAME
    # Evidence shows the adjusted weight.
    a, b = record("a", given_names="Tilly", **born), record("b", given_names="Matilda", **born)
    shown = {e.comparison: e for e in model.evidence(a, tilly.levels, b.given)}
    assert shown["given_name"].weight == round(model.nickname_weight("TILLY", "MATILDA"), 3)


def test_the_nickname_constant_shares_the_level_m_among_the_pairs_of_names() -> None:
    """No labels: the pairs' m (2·fa·fb · 2^weight) add up to the level's m."""
    frequency = {"OLIVIA": 0.05, "OLLIE": 0.01, "LIV": 0.002, "MATILDA": 0.004, "TILLY": 0.001}
    constant = nickname_constant(0.1, frequency)
    assert constant is not None
    pairs = [("LIV", "OLIVIA"), ("OLIVIA", "OLLIE"), ("MATILDA", "TILLY")]
    if names.nickname_related("LIV", "OLLIE"):
        pairs.append(("LIV", "OLLIE"))
    total = sum(
        2
        * frequency[a]
        * frequency[b]
        * 2 ** (constant - math.log2(max(frequency[a], frequency[b])))
        for a, b in pairs
    )
    assert total == pytest.approx(0.1)
    assert nickname_constant(0.1, {}) is None


def test_evidence_names_each_field_for_and_against(model: LinkageModel) -> None:
    a = record(given_names="Maya", date_of_birth=date(2016, 5, 4), **HOME)
    b = record(given_names="Maya", date_of_birth=date(2017, 9, 4), **HOME)
    evidence = {e.comparison: e for e in model.evidence(a, model.score(a, b).levels, b.given)}
    assert evidence["given_name"].weight > 0
    assert evidence["date_of_birth"].weight < 0
    assert evidence["nhs_number"].level is None


def test_blocking_keys_catch_a_wrong_date_of_birth_and_a_new_family_name() -> None:
    original = record(given_names="Elizabeth", family_name="Brown", date_of_birth=date(2015, 3, 4))
    typo = record(given_names="Liz", family_name="Brown", date_of_birth=date(2015, 4, 3))
    renamed = record(
        given_names="Elizabeth",
        family_name="Okafor",
        other_names=("Brown",),
        date_of_birth=date(2015, 3, 4),
    )
    assert set(blocking.keys(original)) & set(blocking.keys(typo))
    assert set(blocking.keys(original)) & set(blocking.keys(renamed))


def test_the_weakest_and_commonest_keys_are_searched_in_smaller_blocks() -> None:
    """Names' sounds (with a year or without) are searched up to SOUND_MAX_BLOCK records, the
    other keys up to the service's limit; the service's limit caps both."""
    assert blocking.block_limit("POLF|SM0|2015") == blocking.SOUND_MAX_BLOCK == 100
    assert blocking.block_limit("QOLF|SM0") == blocking.block_limit("ROLF|SM0") == 100
    assert blocking.block_limit("D20150304O") == blocking.MAX_BLOCK == 400
    assert blocking.block_limit("POLF|SM0|2015", 50) == 50
    assert blocking.block_limit("N9434765919", 250) == 250


def test_the_model_round_trips_through_json(model: LinkageModel, tmp_path: object) -> None:
    again = LinkageModel.from_json(model.to_json())
    assert again.weights == model.weights
    assert again.prior == model.prior


def test_a_record_restored_from_its_stored_features_is_the_record_prepared_again() -> None:
    """Resolving compares candidates from their stored features; they must be exactly what
    preparing the stored record would give, or online and batch would disagree."""
    for generated in generate(3_000, seed=11).records:
        ready = prepare(generated.record)
        stored = dataclasses.replace(
            generated.record,
            postcode=ready.postcode or None,
            nhs_number=ready.nhs,
            upn=ready.upn,
        )
        again = prepare(stored, trusted=True)
        restored = restore(
            stored.record_id,
            date_of_birth=stored.date_of_birth,
            dob_estimated=stored.dob_estimated,
            expected_date=stored.expected_date,
            sex=stored.sex,
            postcode=stored.postcode,
            nhs_number=stored.nhs_number,
            upn=stored.upn,
            **features(ready),  # type: ignore[arg-type]
        )
        for name in (f.name for f in dataclasses.fields(Prepared)):
            if name not in ("record", "problems"):
                assert getattr(restored, name) == getattr(again, name), (name, stored)


def test_scoring_many_candidates_at_once_agrees_with_scoring_each_pair(
    model: LinkageModel,
) -> None:
    """The online resolve scores candidates column-wise from their stored features; every
    level, weight and conflict must be the pairwise code's (what the batch and the accuracy
    benchmark use)."""
    records = generate(12_000, seed=13).records
    prepared = [prepare(generated.record) for generated in records]

    def row(index: int) -> tuple[object, ...]:
        ready, record = prepared[index], records[index].record
        return (
            index,
            index,
            record.date_of_birth,
            record.dob_estimated,
            record.expected_date,
            record.sex,
            ready.postcode or None,
            ready.nhs,
            ready.upn,
            *features(ready).values(),
        )

    blocks = batch.build_blocks(prepared)
    compared = nicknames = 0
    for query in range(0, len(prepared), 4):
        found = sorted(
            {i for key in blocking.query_keys(prepared[query]) for i in blocks.get(key, ())}
        )
        candidates = scoring.Candidates([row(index) for index in found])
        scorer = scoring.Scorer(model, prepared[query])
        for position, index in enumerate(found):
            moved = index % 5 == 0
            levels = cmp.levels(prepared[query], prepared[index], moved)
            assert scorer.levels(candidates, position, moved) == levels
            given = prepared[index].given
            weight = scorer.weight(levels, given)
            assert weight == model.weight_of(prepared[query], levels, given)
            nicknames += levels[cmp.GIVEN] == GIVEN_NICKNAME
            # The bound that lets a resolve pass over a pair without comparing names.
            assert scorer.best_weight(levels[cmp.DOB :]) >= weight
            for floor in (-10.0, 0.0, 6.6):
                reaching = scorer.other_levels(candidates, position, moved, floor=floor)
                if reaching is None:
                    assert weight < floor
                else:
                    assert reaching == levels[cmp.DOB :]
            assert scorer.conflict(candidates, position, levels) == conflict(
                prepared[query], prepared[index], levels, model.known_given
            )
            compared += 1
    assert compared > 12_000
    assert nicknames > 100


def _candidate_rows(found: list[tuple[str, Prepared]]) -> scoring.Candidates:
    """Candidates as the resolve query returns them: (person, prepared record) pairs."""
    return scoring.Candidates(
        [
            (
                ready.record_id,
                person,
                ready.record.date_of_birth,
                ready.record.dob_estimated,
                ready.record.expected_date,
                ready.record.sex,
                ready.postcode or None,
                ready.nhs,
                ready.upn,
                *features(ready).values(),
            )
            for person, ready in found
        ]
    )


def test_a_resolve_keeps_the_best_persons_and_a_conflict_from_any_of_their_records(
    model: LinkageModel,
) -> None:
    """A resolve keeps the best KEPT_CANDIDATES persons (and any linked by an identifier
    besides). A person carries a conflict found in *any* of its records, not only its best:
    Maya's person also holds a record of her twin's name."""
    from services.linking import service

    born = date(2016, 5, 4)
    maya = record("q", given_names="Maya", date_of_birth=born, sex="female", **HOME)
    found = [
        ("maya", record("m1", given_names="Maya", date_of_birth=born, sex="female", **HOME)),
        ("maya", record("m2", given_names="Isla", date_of_birth=born, sex="female", **HOME)),
        ("by-nhs", record("n1", given_names="Zed", nhs_number="9434765919", **HOME)),
    ]
    maya_nhs = record(
        "q", given_names="Maya", date_of_birth=born, sex="female", nhs_number="9434765919", **HOME
    )
    others = [
        (
            f"other-{i}",
            record(
                f"o{i}", given_names=f"Name{i}", date_of_birth=date(2000 + i % 20, 1, 1), **HOME
            ),
        )
        for i in range(service.KEPT_CANDIDATES + 10)
    ]
    for query, expected_first in ((maya, "maya"), (maya_nhs, "by-nhs")):
        candidates = _candidate_rows(found + others)
        scored = service.Scored.of(model, query, candidates)
        ranked = service.rank(model, query, scored).candidates
        by_identifier = int(query.nhs is not None)
        assert len(ranked) == service.KEPT_CANDIDATES + by_identifier
        assert ranked[0].person_id == expected_first
        (maya_person,) = [c for c in ranked if c.person_id == "maya"]
        assert maya_person.record_id == "m1"  # her best record
        assert (
            maya_person.conflict
            == "different given names (twins and siblings share everything else)"
        )
        weights = [c.score.weight for c in ranked[by_identifier:]]
        assert weights == sorted(weights, reverse=True)
        # What a reader sees of the shown candidates: each field's level and weight.
        first = {ready.record_id: ready for _, ready in found + others}[ranked[0].record_id]
        assert ranked[0].evidence == [
            dataclasses.asdict(item)
            for item in model.evidence(query, ranked[0].score.levels, first.given)
        ]


def test_the_resolve_answer_is_resolveout_written_by_hand(model: LinkageModel) -> None:
    """``endpoints.resolve_answer`` writes the resolve's JSON without pydantic; it must be what
    ``ResolveOut`` would have written, and valid against it (the documented schema)."""
    import uuid

    import orjson

    from services.linking import endpoints, service
    from services.linking.schemas import CandidateOut, FieldEvidenceOut, ResolveOut

    born = date(2016, 5, 4)
    people = [uuid.uuid4() for _ in range(4)]
    found = [
        (people[0], record("a", given_names="Maya", date_of_birth=born, sex="female", **HOME)),
        (people[1], record("b", given_names="Isla", date_of_birth=born, sex="female", **HOME)),
        (people[2], record("c", given_names="Mya", date_of_birth=date(2016, 4, 5), **HOME)),
        (people[3], record("d", given_names="Zed", nhs_number="9434765919", **HOME)),
    ]
    by_name = record("q", given_names="Maya", date_of_birth=born, sex="female", **HOME)
    by_nhs = record("q", given_names="Maya", date_of_birth=born, nhs_number="9434765919", **HOME)
    for query, best in ((by_name, people[0]), (by_nhs, people[3])):
        scored = service.Scored.of(model, query, _candidate_rows(found))  # type: ignore[arg-type]
        resolution = service.rank(model, query, scored)
        shown = resolution.candidates[: service.SHOWN_CANDIDATES]
        written = orjson.loads(endpoints.resolve_answer(resolution, shown))
        expected = ResolveOut(
            band=resolution.band.value,
            method=resolution.method.value,
            person_id=resolution.person_id,
            match_probability=round(resolution.probability, 6),
            reason=resolution.reason,
            candidates=[
                CandidateOut(
                    person_id=c.person_id,
                    match_probability=round(c.score.probability, 6),
                    match_weight=round(c.score.weight, 3),
                    deterministic=c.score.deterministic,
                    conflict=c.conflict or c.score.conflict,
                    evidence=[FieldEvidenceOut.model_validate(item) for item in c.evidence],
                )
                for c in shown
            ],
        )
        assert written == expected.model_dump(mode="json")
        assert ResolveOut.model_validate(written) == expected
        assert len(written["candidates"]) == 4 and written["person_id"] == str(best)
