"""``threadline link-file`` as an onboarding agency runs it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deploy.local.cli import main
from services.linking.synthetic import generate, write_csv


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_file_is_linked_to_persons_with_probabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partnership = generate(3_000, seed=21)
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(partnership.records, source)
    assert main(["link-file", str(source), str(target), "--workers", "1"]) == 0
    linked = rows(target)
    assert [row["record_id"] for row in linked] == [g.record.record_id for g in partnership.records]
    assert set(linked[0]) == {"record_id", "person_id", "match_probability"}
    truth = {g.record.record_id: g.person_id for g in partnership.records}
    persons: dict[str, set[str]] = {}
    for row in linked:
        persons.setdefault(row["person_id"], set()).add(truth[row["record_id"]])
        assert 0.0 <= float(row["match_probability"]) <= 1.0
    wrong = sum(1 for people in persons.values() if len(people) > 1)
    assert wrong <= len(persons) * 0.01
    assert len(persons) < len(linked) * 0.6  # records did link
    assert "linked 3,000 records" in capsys.readouterr().out


def test_a_bad_value_is_reported_for_its_row_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(
        "record_id,given_name,family_name,date_of_birth,nhs_number,postcode,favourite_colour\n"
        "a,William,Hargreaves,2015-02-30,943 476 5919,DE1 2AB,blue\n"
        "b,Bill,Hargreaves,2015-02-03,9434765918,DE1 2AB,red\n"
        "c,William,Hargreaves,2015-02-03,943 476 5919,not a postcode,green\n"
    )
    assert main(["link-file", str(source), str(target)]) == 0
    errors = capsys.readouterr().err
    assert "line 2 (record a): date_of_birth: not a date" in errors
    assert "line 3 (record b): nhs_number: fails the NHS number check digit" in errors
    assert "line 4 (record c): postcode:" in errors
    linked = {row["record_id"]: row["person_id"] for row in rows(target)}
    assert linked["a"] == linked["c"]  # the valid NHS number still links them


def test_a_file_without_record_ids_is_refused_with_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("name,dob\nBill,2015-01-01\n")
    assert main(["link-file", str(source), str(tmp_path / "out.csv")]) == 2
    assert "no record_id column" in capsys.readouterr().err
