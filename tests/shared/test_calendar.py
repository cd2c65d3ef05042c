"""Working-day deadlines and Operation Encompass school days, on real English dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from shared.calendar import (
    LONDON,
    NoSchoolDayConfiguredError,
    SchoolDayCalendar,
    Term,
    WorkingDayCalendar,
    load_calendars,
)

SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "calendars" / "england.toml"

COUNCIL_CHRISTMAS_2026 = (date(2026, 12, 29), date(2026, 12, 30), date(2026, 12, 31))


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def working() -> WorkingDayCalendar:
    return WorkingDayCalendar()


@pytest.fixture
def council() -> WorkingDayCalendar:
    return WorkingDayCalendar(closures=COUNCIL_CHRISTMAS_2026)


@pytest.fixture
def school() -> SchoolDayCalendar:
    """Terms for summer 2026 and autumn 2026 - spring 2027, with INSET days."""
    return SchoolDayCalendar(
        terms=[
            Term("Summer 2026 (first half)", date(2026, 4, 13), date(2026, 5, 22)),
            Term("Autumn 2026 (first half)", date(2026, 9, 1), date(2026, 10, 23)),
            Term("Autumn 2026 (second half)", date(2026, 11, 2), date(2026, 12, 18)),
            Term("Spring 2027 (first half)", date(2027, 1, 4), date(2027, 2, 12)),
        ],
        closures=[date(2026, 9, 1), date(2026, 9, 2), date(2026, 11, 27)],
    )


# --- bank holidays -------------------------------------------------------------


def test_good_friday_and_easter_monday_2026_are_not_working_days(
    working: WorkingDayCalendar,
) -> None:
    assert not working.is_working_day(date(2026, 4, 3))
    assert not working.is_working_day(date(2026, 4, 6))
    assert working.is_working_day(date(2026, 4, 2))
    assert working.is_working_day(date(2026, 4, 7))


def test_referral_on_maundy_thursday_is_due_at_end_of_tuesday_after_easter(
    working: WorkingDayCalendar,
) -> None:
    due = working.add_working_days(london(2026, 4, 2, 14), 1)
    assert due == utc(2026, 4, 7, 23)  # midnight BST starting Wednesday 8 April


def test_boxing_day_2026_on_saturday_is_substituted_by_monday_28_december(
    working: WorkingDayCalendar,
) -> None:
    assert working.is_bank_holiday(date(2026, 12, 25))
    assert working.is_bank_holiday(date(2026, 12, 28))
    assert not working.is_working_day(date(2026, 12, 28))
    assert working.is_working_day(date(2026, 12, 29))


def test_christmas_2027_on_saturday_gives_substitutes_on_monday_27_and_tuesday_28(
    working: WorkingDayCalendar,
) -> None:
    assert not working.is_working_day(date(2027, 12, 27))
    assert not working.is_working_day(date(2027, 12, 28))
    assert working.next_working_day(date(2027, 12, 24)) == date(2027, 12, 29)


def test_new_years_day_2027_is_not_a_working_day(working: WorkingDayCalendar) -> None:
    assert not working.is_working_day(date(2027, 1, 1))


def test_bank_holidays_are_known_for_any_year_asked(working: WorkingDayCalendar) -> None:
    assert not working.is_working_day(date(2035, 12, 25))
    assert not working.is_working_day(date(2019, 5, 27))  # Spring bank holiday


# --- Christmas deadlines -------------------------------------------------------


def test_referral_on_christmas_eve_2026_is_due_at_end_of_tuesday_29_december(
    working: WorkingDayCalendar,
) -> None:
    assert working.add_working_days(london(2026, 12, 24, 11), 1) == utc(2026, 12, 30)


def test_council_christmas_closure_moves_christmas_eve_referral_to_end_of_4_january(
    council: WorkingDayCalendar,
) -> None:
    assert council.add_working_days(london(2026, 12, 24, 11), 1) == utc(2027, 1, 5)


@pytest.mark.parametrize(
    ("closures", "due"),
    [
        ((), utc(2026, 12, 31)),  # 24, 29, 30 Dec: end of Wednesday 30 December
        (COUNCIL_CHRISTMAS_2026, utc(2027, 1, 6)),  # 24 Dec, 4, 5 Jan: end of Tuesday 5 Jan
    ],
    ids=["bank holidays only", "with council closure"],
)
def test_three_working_days_from_23_december_2026(
    closures: tuple[date, ...], due: datetime
) -> None:
    calendar = WorkingDayCalendar(closures=closures)
    assert calendar.add_working_days(london(2026, 12, 23, 9, 30), 3) == due


# --- clock changes -------------------------------------------------------------


def test_deadline_after_spring_clock_change_is_midnight_bst(working: WorkingDayCalendar) -> None:
    due = working.add_working_days(london(2026, 3, 27, 16), 1)  # Friday, still GMT
    assert due == utc(2026, 3, 30, 23)
    assert due.astimezone(LONDON) == london(2026, 3, 31)


def test_deadline_after_autumn_clock_change_is_midnight_gmt(working: WorkingDayCalendar) -> None:
    due = working.add_working_days(london(2026, 10, 23, 16), 1)  # Friday, still BST
    assert due == utc(2026, 10, 27)
    assert due.astimezone(LONDON) == london(2026, 10, 27)


@pytest.mark.parametrize(
    ("start", "due"),
    [
        (london(2026, 3, 29, 0, 30), utc(2026, 3, 30, 23)),  # 00:30 GMT, before clocks go forward
        (london(2026, 10, 25, 0, 30), utc(2026, 10, 27)),  # 00:30 BST, before clocks go back
    ],
    ids=["spring", "autumn"],
)
def test_referral_at_half_past_midnight_on_clock_change_day_is_due_end_of_monday(
    working: WorkingDayCalendar, start: datetime, due: datetime
) -> None:
    assert working.add_working_days(start, 1) == due


def test_deadline_is_returned_in_utc_at_local_midnight(working: WorkingDayCalendar) -> None:
    due = working.add_working_days(london(2026, 7, 1, 10), 5)
    assert due.tzinfo is UTC
    assert due.astimezone(LONDON).time() == time(0)


def test_the_london_date_counts_not_the_utc_date(working: WorkingDayCalendar) -> None:
    # 23:30 UTC on Friday 5 June is 00:30 on Saturday in London.
    assert working.add_working_days(utc(2026, 6, 5, 23, 30), 0) == utc(2026, 6, 8, 23)


# --- ordinary days, weekends and bad input -------------------------------------


def test_referral_on_friday_afternoon_is_due_at_end_of_monday(
    working: WorkingDayCalendar,
) -> None:
    assert working.add_working_days(london(2026, 6, 12, 16), 1) == utc(2026, 6, 15, 23)


def test_referral_on_saturday_is_due_at_end_of_monday(working: WorkingDayCalendar) -> None:
    assert working.add_working_days(london(2026, 6, 13, 10), 1) == utc(2026, 6, 15, 23)


def test_referral_on_friday_before_a_bank_holiday_monday_is_due_end_of_tuesday(
    working: WorkingDayCalendar,
) -> None:
    assert working.add_working_days(london(2026, 5, 22, 16), 1) == utc(2026, 5, 26, 23)


def test_zero_working_days_on_a_working_day_is_the_end_of_that_day(
    working: WorkingDayCalendar,
) -> None:
    assert working.add_working_days(london(2026, 6, 10, 9), 0) == utc(2026, 6, 10, 23)


def test_zero_working_days_at_the_weekend_is_the_end_of_the_next_working_day(
    working: WorkingDayCalendar,
) -> None:
    assert working.add_working_days(london(2026, 6, 13, 9), 0) == utc(2026, 6, 15, 23)
    assert working.add_working_days(london(2026, 4, 3, 9), 0) == utc(2026, 4, 7, 23)


def test_negative_working_days_are_refused(working: WorkingDayCalendar) -> None:
    with pytest.raises(ValueError, match="days must be >= 0"):
        working.add_working_days(london(2026, 6, 10, 9), -1)


def test_naive_datetimes_are_refused_everywhere(
    working: WorkingDayCalendar, school: SchoolDayCalendar
) -> None:
    naive = datetime(2026, 6, 10, 9)
    aware = london(2026, 6, 10, 9)
    with pytest.raises(ValueError, match="naive"):
        working.add_working_days(naive, 1)
    with pytest.raises(ValueError, match="naive"):
        working.working_days_between(naive, aware)
    with pytest.raises(ValueError, match="naive"):
        working.working_days_between(aware, naive)
    with pytest.raises(ValueError, match="naive"):
        school.next_school_day_start(naive)


def test_a_datetime_passed_as_a_day_is_refused(working: WorkingDayCalendar) -> None:
    with pytest.raises(TypeError, match="not a datetime"):
        working.is_working_day(london(2026, 12, 25, 12))


def test_next_working_day_is_strictly_after_the_day(working: WorkingDayCalendar) -> None:
    assert working.next_working_day(date(2026, 6, 10)) == date(2026, 6, 11)
    assert working.next_working_day(date(2026, 4, 2)) == date(2026, 4, 7)


# --- working_days_between ------------------------------------------------------


def test_working_days_between_counts_days_after_start_up_to_the_end_day(
    working: WorkingDayCalendar,
) -> None:
    # Thursday 2 April to Wednesday 8 April 2026: Tue 7 and Wed 8 (Easter in between).
    assert working.working_days_between(london(2026, 4, 2, 14), london(2026, 4, 8, 10)) == 2
    assert working.working_days_between(london(2026, 4, 2, 9), london(2026, 4, 2, 17)) == 0
    assert working.working_days_between(london(2026, 4, 8, 9), london(2026, 4, 2, 9)) == 0


def test_working_days_between_treats_local_midnight_as_the_end_of_the_previous_day(
    working: WorkingDayCalendar,
) -> None:
    start = london(2026, 6, 12, 16)  # Friday
    assert working.working_days_between(start, london(2026, 6, 16)) == 1  # end of Monday
    assert working.working_days_between(start, london(2026, 6, 16, 0, 1)) == 2


@pytest.mark.parametrize("closures", [(), COUNCIL_CHRISTMAS_2026], ids=["bank", "council"])
def test_working_days_between_undoes_add_working_days_for_every_start_in_2026(
    closures: tuple[date, ...],
) -> None:
    calendar = WorkingDayCalendar(closures=closures)
    times = (time(0), time(0, 30), time(9), time(16), time(23, 59))
    day = date(2026, 1, 1)
    while day.year == 2026:
        for clock in times:
            start = datetime.combine(day, clock, tzinfo=LONDON)
            for days in range(1, 6):
                due = calendar.add_working_days(start, days)
                assert calendar.working_days_between(start, due) == days, (start, days)
            if calendar.is_working_day(day):
                assert (
                    calendar.working_days_between(start, calendar.add_working_days(start, 0)) == 0
                )
        day += timedelta(days=1)


# --- school days ---------------------------------------------------------------


def test_sunday_evening_in_term_gives_monday_at_quarter_to_nine(
    school: SchoolDayCalendar,
) -> None:
    assert school.next_school_day_start(london(2026, 9, 20, 19)) == london(2026, 9, 21, 8, 45)


def test_before_school_starts_on_a_school_day_gives_the_same_morning(
    school: SchoolDayCalendar,
) -> None:
    assert school.next_school_day_start(london(2026, 9, 22, 7)) == london(2026, 9, 22, 8, 45)


def test_after_school_starts_on_friday_gives_monday(school: SchoolDayCalendar) -> None:
    assert school.next_school_day_start(london(2026, 9, 18, 10)) == london(2026, 9, 21, 8, 45)


def test_exactly_at_quarter_to_nine_gives_the_next_day(school: SchoolDayCalendar) -> None:
    assert school.next_school_day_start(london(2026, 9, 22, 8, 45)) == london(2026, 9, 23, 8, 45)


def test_last_day_of_term_gives_first_day_of_next_term(school: SchoolDayCalendar) -> None:
    start = school.next_school_day_start(london(2026, 12, 18, 12))
    assert start == utc(2027, 1, 4, 8, 45)  # GMT


def test_bank_holiday_in_term_is_skipped(school: SchoolDayCalendar) -> None:
    assert not school.is_school_day(date(2026, 5, 4))  # May Day, in the summer term
    assert school.next_school_day_start(london(2026, 5, 1, 10)) == utc(2026, 5, 5, 7, 45)


def test_inset_day_is_skipped(school: SchoolDayCalendar) -> None:
    assert not school.is_school_day(date(2026, 11, 27))
    assert school.next_school_day_start(london(2026, 11, 26, 10)) == london(2026, 11, 30, 8, 45)


def test_bank_holiday_then_inset_days_at_start_of_term_are_all_skipped(
    school: SchoolDayCalendar,
) -> None:
    # Mon 31 Aug 2026 bank holiday (summer break), 1-2 Sep INSET: pupils back Thu 3 Sep.
    assert school.next_school_day_start(london(2026, 8, 30, 20)) == london(2026, 9, 3, 8, 45)


def test_half_term_week_gives_the_monday_after(school: SchoolDayCalendar) -> None:
    assert school.next_school_day_start(london(2026, 10, 27, 11)) == london(2026, 11, 2, 8, 45)


def test_friday_before_autumn_half_term_crosses_the_clock_change(
    school: SchoolDayCalendar,
) -> None:
    friday = london(2026, 10, 23, 7)
    assert school.next_school_day_start(friday) == utc(2026, 10, 23, 7, 45)  # BST
    assert school.next_school_day_start(london(2026, 10, 23, 16)) == utc(2026, 11, 2, 8, 45)


def test_term_time_weekend_across_the_autumn_clock_change() -> None:
    no_half_term = SchoolDayCalendar([Term("Autumn 2026", date(2026, 9, 1), date(2026, 12, 18))])
    start = no_half_term.next_school_day_start(london(2026, 10, 24, 12))
    assert start == utc(2026, 10, 26, 8, 45)  # GMT after Sunday's change
    assert start.tzinfo is UTC


def test_school_days_exclude_weekends_and_holidays(school: SchoolDayCalendar) -> None:
    assert school.is_school_day(date(2026, 9, 3))
    assert not school.is_school_day(date(2026, 9, 5))  # Saturday in term
    assert not school.is_school_day(date(2026, 8, 5))  # summer holiday


def test_council_closures_do_not_close_schools() -> None:
    council = WorkingDayCalendar(closures=[date(2026, 11, 20)])
    calendar = SchoolDayCalendar(
        [Term("Autumn 2026", date(2026, 9, 1), date(2026, 12, 18))], working_days=council
    )
    assert calendar.is_school_day(date(2026, 11, 20))


def test_no_term_configured_after_the_moment_is_an_error(school: SchoolDayCalendar) -> None:
    with pytest.raises(NoSchoolDayConfiguredError, match="no school term"):
        school.next_school_day_start(london(2027, 2, 12, 12))


def test_overlapping_or_backwards_terms_are_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        SchoolDayCalendar([Term("Autumn", date(2026, 12, 18), date(2026, 9, 1))])
    with pytest.raises(ValueError, match="overlap"):
        SchoolDayCalendar(
            [
                Term("Autumn", date(2026, 9, 1), date(2026, 12, 18)),
                Term("Spring", date(2026, 12, 1), date(2027, 3, 26)),
            ]
        )


# --- configuration -------------------------------------------------------------


def test_sample_england_configuration_loads(tmp_path: Path) -> None:
    working, school = load_calendars(SAMPLE_CONFIG)
    assert working.add_working_days(london(2026, 12, 24, 11), 1) == utc(2027, 1, 5)
    assert school.day_start == time(8, 45)
    assert school.terms[0].start == date(2025, 9, 1)
    assert school.terms[-1].end == date(2027, 7, 22)
    assert not school.is_school_day(date(2025, 9, 1))  # INSET
    # Autumn half-term 2025, then INSET on Monday 3 November.
    assert school.next_school_day_start(london(2025, 10, 24, 12)) == utc(2025, 11, 4, 8, 45)


def test_sample_terms_start_and_end_on_weekdays() -> None:
    _, school = load_calendars(SAMPLE_CONFIG)
    for term in school.terms:
        assert term.start.weekday() < 5 and term.end.weekday() < 5, term


def test_minimal_configuration_uses_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.toml"
    path.write_text(
        "[[school.terms]]\nname = 'Autumn 2026'\nstart = 2026-09-01\nend = 2026-12-18\n",
        encoding="utf-8",
    )
    working, school = load_calendars(path)
    assert working.closures == frozenset()
    assert school.day_start == time(8, 45)
    assert school.terms == (Term("Autumn 2026", date(2026, 9, 1), date(2026, 12, 18)),)


GOOD_TERM = "[[school.terms]]\nname = 'Autumn'\nstart = 2026-09-01\nend = 2026-12-18\n"


@pytest.mark.parametrize(
    ("text", "offending_key"),
    [
        (
            "[[school.terms]]\nname = 'Autumn'\nstart = 2026-12-18\nend = 2026-09-01\n",
            "school.terms[0].end",
        ),
        (
            "[[school.terms]]\nname = 'Autumn'\nstart = 2026-09-01\nend = 2026-02-30\n",
            "end = 2026-02-30",
        ),
        (
            "[[school.terms]]\nname = 'Autumn'\nstart = '2026-09-01'\nend = 2026-12-18\n",
            "school.terms[0].start",
        ),
        (
            "[working_days]\nclosures = [2026-12-29, 'tomorrow']\n" + GOOD_TERM,
            "working_days.closures[1]",
        ),
        ("[working_days]\nclosure = [2026-12-29]\n" + GOOD_TERM, "'closure'"),
        ("[school]\nday_start = '8.45'\n" + GOOD_TERM, "school.day_start"),
        ("[working_days]\nclosures = []\n", "school"),
        ("[school]\nterms = []\n", "school.terms"),
    ],
    ids=[
        "end before start",
        "impossible date",
        "quoted date",
        "bad closure",
        "misspelt key",
        "bad day start",
        "no school table",
        "no terms",
    ],
)
def test_malformed_configuration_names_the_offending_key(
    tmp_path: Path, text: str, offending_key: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        load_calendars(path)
    assert offending_key in str(raised.value)
    assert str(path) in str(raised.value)
