"""Which school is told about a child (Operation Encompass), from the person's records newest
first, the configured pupil rolls, and who is known not to be in school."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.notifications.alerts import find_school
from services.notifications.models import Subject
from services.notifications.routing import Routing, load

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def record(
    days_ago: int, *, school: str | None = None, status: str | None = None, upn: str | None = None
) -> Subject:
    return Subject(
        subject_id=uuid.uuid4(),
        school_urn=school,
        school_status=status,
        upn=upn,
        seen_at=NOW - timedelta(days=days_ago),
    )


def routing(tmp_path: Path) -> Routing:
    path = tmp_path / "routing.toml"
    text = Path("config/notifications/routing.toml").read_text()
    text = text.replace(
        'school_urn = "100001"\nupns = []', 'school_urn = "100002"\nupns = ["A123"]'
    )
    text = text.replace("[not_in_school]\nupns = []", '[not_in_school]\nupns = ["H999"]')
    path.write_text(text)
    return load(path)


def test_the_newest_record_that_names_a_school_wins(tmp_path: Path) -> None:
    rules = routing(tmp_path)
    records = [record(0), record(30, school="100002"), record(400, school="100001")]
    assert find_school(rules, records) == ("100002", "school")


def test_missing_education_after_the_last_school_record_means_not_in_school(
    tmp_path: Path,
) -> None:
    rules = routing(tmp_path)
    records = [record(0), record(10, status="not_in_school"), record(90, school="100001")]
    assert find_school(rules, records) == (None, "not_in_school")
    # A school record newer than the concern: the child is back at school.
    back = [record(2, school="100002"), *records]
    assert find_school(rules, back) == ("100002", "school")


def test_pupil_rolls_place_a_child_no_record_places(tmp_path: Path) -> None:
    rules = routing(tmp_path)
    assert find_school(rules, [record(0, upn="A123")]) == ("100002", "pupil_roll")
    assert find_school(rules, [record(0, upn="B456")]) == (None, "school_unknown")
    assert find_school(rules, []) == (None, "school_unknown")


def test_a_child_known_to_be_educated_at_home_goes_to_the_local_authority(tmp_path: Path) -> None:
    rules = routing(tmp_path)
    records = [record(0, upn="H999"), record(50, school="100001")]
    assert find_school(rules, records) == (None, "not_in_school")
