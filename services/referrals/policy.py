"""The partnership's deadline policy: how long each step of a referral may take."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from shared.calendar import WorkingDayCalendar


class DeadlineKind(StrEnum):
    ACKNOWLEDGEMENT = "acknowledgement"
    DECISION = "decision"
    FEEDBACK = "feedback"
    PHONE_FOLLOW_UP = "phone_follow_up"
    ASSESSMENT = "assessment"


@dataclass(frozen=True)
class Allowance:
    """Either whole working days (ending at the end of the last one) or plain hours."""

    working_days: int | None = None
    hours: int | None = None

    def due(self, start: datetime, calendar: WorkingDayCalendar) -> datetime:
        if self.working_days is not None:
            return calendar.add_working_days(start, self.working_days)
        assert self.hours is not None
        return start + timedelta(hours=self.hours)

    def describe(self) -> str:
        if self.working_days is not None:
            return f"{self.working_days} working day{'s' if self.working_days != 1 else ''}"
        return f"{self.hours} hours"


DEFAULTS: dict[DeadlineKind, Allowance] = {
    DeadlineKind.ACKNOWLEDGEMENT: Allowance(working_days=1),
    DeadlineKind.DECISION: Allowance(working_days=1),
    DeadlineKind.FEEDBACK: Allowance(working_days=3),
    DeadlineKind.PHONE_FOLLOW_UP: Allowance(hours=48),
    DeadlineKind.ASSESSMENT: Allowance(working_days=45),
}


@dataclass(frozen=True)
class DeadlinePolicy:
    allowances: dict[DeadlineKind, Allowance]

    def due(self, kind: DeadlineKind, start: datetime, calendar: WorkingDayCalendar) -> datetime:
        return self.allowances[kind].due(start, calendar)


def load_policy(path: Path | None) -> DeadlinePolicy:
    """The policy in ``path`` over the defaults; refuses anything it does not understand."""
    allowances = dict(DEFAULTS)
    if path is None:
        return DeadlinePolicy(allowances)
    with path.open("rb") as file:
        document = tomllib.load(file)
    unknown = set(document) - {"deadlines"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
    for name, values in document.get("deadlines", {}).items():
        try:
            kind = DeadlineKind(name)
        except ValueError as error:
            raise ValueError(f"{path}: deadlines.{name} is not a deadline of the policy") from error
        keys = set(values)
        if keys not in ({"working_days"}, {"hours"}):
            raise ValueError(f"{path}: deadlines.{name} needs exactly one of working_days or hours")
        amount = values.get("working_days", values.get("hours"))
        if not isinstance(amount, int) or amount < 0:
            raise ValueError(f"{path}: deadlines.{name} must be a whole number of days or hours")
        allowances[kind] = Allowance(**values)
    return DeadlinePolicy(allowances)
