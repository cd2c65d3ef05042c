"""Working-day and school-day arithmetic for statutory deadlines in England.

Deadlines count working days (Mon-Fri, not an England & Wales bank holiday, not a
local closure day); Operation Encompass notifications count school days (inside a
configured term, not a bank holiday, not an INSET/closure day). Days are reckoned in
Europe/London; every datetime accepted or returned is timezone-aware, returns are UTC.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "LONDON",
    "NoSchoolDayConfiguredError",
    "SchoolDayCalendar",
    "Term",
    "WorkingDayCalendar",
    "end_of_local_day",
    "load_calendars",
    "local_date",
]

LONDON: ZoneInfo = ZoneInfo("Europe/London")

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5


class NoSchoolDayConfiguredError(LookupError):
    """The configured term dates end before the next school day could be found."""


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} is a naive datetime ({moment.isoformat()}); "
            "Threadline only accepts timezone-aware datetimes"
        )


def _require_date(day: date, name: str) -> None:
    # datetime is a subclass of date but never equals one, so holiday lookups would
    # silently miss; make the caller choose the local date explicitly.
    if isinstance(day, datetime):
        raise TypeError(
            f"{name} must be a date, not a datetime; use local_date(moment) to take "
            "its Europe/London date"
        )


def local_date(moment: datetime) -> date:
    """The Europe/London calendar date of an aware instant."""
    _require_aware(moment, "moment")
    return moment.astimezone(LONDON).date()


def end_of_local_day(day: date) -> datetime:
    """The instant a London day ends (local midnight starting the next day), in UTC."""
    _require_date(day, "day")
    return datetime.combine(day + _ONE_DAY, time(0), tzinfo=LONDON).astimezone(UTC)


@functools.cache
def _bank_holidays(year: int) -> frozenset[date]:
    """England & Wales bank holidays (substitute days included) falling in `year`."""
    # Neighbouring years are included so a holiday observed across a year boundary
    # is still found; the cache makes this a one-off cost per year.
    source = holidays.country_holidays("GB", subdiv="ENG", years=(year - 1, year, year + 1))
    return frozenset(day for day in source if day.year == year)


class WorkingDayCalendar:
    """Working days in England: Mon-Fri, not a bank holiday, not a local closure day."""

    def __init__(self, closures: Iterable[date] = ()) -> None:
        self._closures = frozenset(closures)
        for closure in self._closures:
            _require_date(closure, "closure")

    @property
    def closures(self) -> frozenset[date]:
        """Local closure days (e.g. the council's Christmas shutdown)."""
        return self._closures

    def is_bank_holiday(self, day: date) -> bool:
        """Whether `day` is an England & Wales bank holiday, including substitute days."""
        _require_date(day, "day")
        return day in _bank_holidays(day.year)

    def is_working_day(self, day: date) -> bool:
        """Mon-Fri, not a bank holiday and not a local closure day."""
        _require_date(day, "day")
        return (
            day.weekday() < _SATURDAY
            and day not in self._closures
            and day not in _bank_holidays(day.year)
        )

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after `day`."""
        candidate = day + _ONE_DAY
        while not self.is_working_day(candidate):
            candidate += _ONE_DAY
        return candidate

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """Deadline: the end of the `days`-th working day after `start`'s London date, in UTC.

        `days == 0` means the end of `start`'s own day if it is a working day, else the end
        of the next working day. Raises ValueError for negative `days` or a naive `start`.
        """
        _require_aware(start, "start")
        if days < 0:
            raise ValueError(f"days must be >= 0, got {days}")
        due = local_date(start)
        if days == 0:
            if not self.is_working_day(due):
                due = self.next_working_day(due)
        else:
            for _ in range(days):
                due = self.next_working_day(due)
        return end_of_local_day(due)

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days after `start`'s London date that have begun before `end`.

        That is the working days strictly after start's local date up to and including
        end's local date, where an `end` at exactly local midnight closes the previous
        day. So for n >= 1, working_days_between(s, add_working_days(s, n)) == n.
        Returns 0 when `end` is not after that point. Raises ValueError if naive.
        """
        _require_aware(start, "start")
        _require_aware(end, "end")
        first = local_date(start) + _ONE_DAY
        # The last day that has begun strictly before `end`.
        last = local_date(end - timedelta(microseconds=1))
        count = 0
        day = first
        while day <= last:
            if self.is_working_day(day):
                count += 1
            day += _ONE_DAY
        return count


class Term(NamedTuple):
    """A school term (or half-term block); `start` and `end` are both school dates."""

    name: str
    start: date
    end: date


class SchoolDayCalendar:
    """School days for Operation Encompass: in term, Mon-Fri, no bank holiday or INSET day."""

    def __init__(
        self,
        terms: Sequence[Term],
        closures: Iterable[date] = (),
        day_start: time = time(8, 45),
        working_days: WorkingDayCalendar | None = None,
    ) -> None:
        """`working_days` supplies bank holidays only: council closures do not close schools."""
        if day_start.tzinfo is not None:
            raise ValueError("day_start must be a naive local time (it is read in Europe/London)")
        ordered = sorted(terms, key=lambda term: term.start)
        for term in ordered:
            _require_date(term.start, f"term {term.name!r} start")
            _require_date(term.end, f"term {term.name!r} end")
            if term.end < term.start:
                raise ValueError(
                    f"term {term.name!r} ends ({term.end}) before it starts ({term.start})"
                )
        for earlier, later in itertools.pairwise(ordered):
            if later.start <= earlier.end:
                raise ValueError(f"terms {earlier.name!r} and {later.name!r} overlap")
        self._terms = tuple(ordered)
        self._starts = [term.start for term in ordered]
        self._closures = frozenset(closures)
        for closure in self._closures:
            _require_date(closure, "closure")
        self._day_start = day_start
        self._working_days = working_days if working_days is not None else WorkingDayCalendar()

    @property
    def terms(self) -> tuple[Term, ...]:
        """The terms, in date order."""
        return self._terms

    @property
    def closures(self) -> frozenset[date]:
        """INSET and other school closure days."""
        return self._closures

    @property
    def day_start(self) -> time:
        """The local time a school day starts (when a notification can be acted on)."""
        return self._day_start

    def _term_containing(self, day: date) -> Term | None:
        index = bisect.bisect_right(self._starts, day) - 1
        if index >= 0 and day <= self._terms[index].end:
            return self._terms[index]
        return None

    def is_school_day(self, day: date) -> bool:
        """Inside a term, Mon-Fri, not a bank holiday and not an INSET/closure day."""
        _require_date(day, "day")
        return (
            day.weekday() < _SATURDAY
            and day not in self._closures
            and self._term_containing(day) is not None
            and not self._working_days.is_bank_holiday(day)
        )

    def school_day_start(self, day: date) -> datetime:
        """The UTC instant school starts on `day` (day_start, London time)."""
        _require_date(day, "day")
        return datetime.combine(day, self._day_start, tzinfo=LONDON).astimezone(UTC)

    def next_school_day_start(self, moment: datetime) -> datetime:
        """The earliest school-day start strictly after `moment`, in UTC.

        Raises NoSchoolDayConfiguredError when the configured terms end first.
        """
        _require_aware(moment, "moment")
        day = local_date(moment)
        while True:
            term = self._term_containing(day)
            if term is None:
                index = bisect.bisect_right(self._starts, day)
                if index == len(self._terms):
                    raise NoSchoolDayConfiguredError(
                        f"no school term is configured after {day}; add the next term dates"
                    )
                day = self._terms[index].start
                continue
            if self.is_school_day(day):
                start = self.school_day_start(day)
                if start > moment:
                    return start
            day += _ONE_DAY


# --- configuration ---------------------------------------------------------------

_TOP_KEYS = frozenset({"working_days", "school"})
_WORKING_KEYS = frozenset({"closures"})
_SCHOOL_KEYS = frozenset({"day_start", "closures", "terms"})
_TERM_KEYS = frozenset({"name", "start", "end"})
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _table(value: object, key: str, allowed: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a table, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{key} has unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return value


def _date(value: object, key: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(
            f"{key} must be a TOML date such as 2025-09-01, got {type(value).__name__} {value!r}"
        )
    return value


def _dates(value: object, key: str) -> list[date]:
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of dates, got {type(value).__name__}")
    return [_date(item, f"{key}[{index}]") for index, item in enumerate(value)]


def _parse_toml(path: Path) -> dict[str, object]:
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib names only a position; quote the line so the offending key is visible.
        position = _TOML_POSITION.search(str(error))
        lines = text.splitlines()
        if position is not None and 0 < int(position.group(1)) <= len(lines):
            line = lines[int(position.group(1)) - 1].strip()
            raise ValueError(f"{path}: {error}: {line!r}") from error
        raise ValueError(f"{path}: {error}") from error


def load_calendars(path: Path) -> tuple[WorkingDayCalendar, SchoolDayCalendar]:
    """Read a calendar TOML file (see config/calendars/england.toml for the format).

    Raises ValueError naming the offending key when the file is malformed.
    """
    document = _parse_toml(path)
    try:
        _table(document, "the top level", _TOP_KEYS)
        working = _table(document.get("working_days", {}), "working_days", _WORKING_KEYS)
        working_days = WorkingDayCalendar(
            _dates(working.get("closures", []), "working_days.closures")
        )

        if "school" not in document:
            raise ValueError("school is missing; a [school] table with terms is required")
        school = _table(document["school"], "school", _SCHOOL_KEYS)
        day_start = school.get("day_start", time(8, 45))
        if not isinstance(day_start, time):
            raise ValueError(
                f"school.day_start must be a TOML local time such as 08:45:00, got {day_start!r}"
            )
        raw_terms = school.get("terms")
        if not isinstance(raw_terms, list) or not raw_terms:
            raise ValueError("school.terms must be a non-empty array of [[school.terms]] tables")
        terms: list[Term] = []
        for index, raw_term in enumerate(raw_terms):
            key = f"school.terms[{index}]"
            entry = _table(raw_term, key, _TERM_KEYS)
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{key}.name must be a non-empty string")
            start = _date(entry.get("start"), f"{key}.start")
            end = _date(entry.get("end"), f"{key}.end")
            if end < start:
                raise ValueError(f"{key}.end ({end}) is before {key}.start ({start}) in {name!r}")
            terms.append(Term(name, start, end))
        school_days = SchoolDayCalendar(
            terms,
            closures=_dates(school.get("closures", []), "school.closures"),
            day_start=day_start,
            working_days=working_days,
        )
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return working_days, school_days
