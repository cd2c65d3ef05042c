"""``threadline link-file IN.csv OUT.csv``: link a whole file of person records (an agency's
legacy records on onboarding) without a database.

Input columns: ``record_id, source, given_name, family_name, date_of_birth (YYYY-MM-DD), sex,
address, postcode, nhs_number, upn``; any may be empty; other columns are ignored, except the
optional ``other_names`` (separated by ``;``), ``expected_date`` (an unborn child's) and
``dob_estimated`` (``yes`` when the date of birth is an estimate). A bad value in one row (an
impossible date, an NHS number failing modulus 11) is reported for that row, treated as
missing, and the run goes on. Output: ``record_id, person_id, match_probability``.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TextIO

from services.linking.matching import batch
from services.linking.matching.model import LinkageModel
from services.linking.matching.records import PersonRecord, Prepared, prepare

REQUIRED = (
    "record_id",
    "source",
    "given_name",
    "family_name",
    "date_of_birth",
    "sex",
    "address",
    "postcode",
    "nhs_number",
    "upn",
)
TRUE_WORDS = {"yes", "y", "true", "1"}


class LinkFileError(Exception):
    """The file cannot be linked at all (no header, no record_id column)."""


@dataclass
class RowProblem:
    line: int
    record_id: str
    problem: str


@dataclass
class LinkFileSummary:
    records: int
    persons: int
    seconds: float
    problems: list[RowProblem] = field(default_factory=list)


def _date(value: str, column: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"{column}: not a date in the form YYYY-MM-DD")
        return None


def read_records(file: TextIO) -> Iterator[tuple[int, PersonRecord, list[str]]]:
    """Each row as a record, with the problems of its values (each such value left out)."""
    reader = csv.DictReader(file)
    if reader.fieldnames is None:
        raise LinkFileError("the file is empty: expected a header row")
    columns = {name.strip().lower(): name for name in reader.fieldnames}
    if "record_id" not in columns:
        raise LinkFileError("no record_id column: expected " + ", ".join(REQUIRED))
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):

        def value(column: str, row: dict[str, str | None] = row) -> str:
            name = columns.get(column)
            return (row.get(name) or "").strip() if name else ""

        problems: list[str] = []
        record_id = value("record_id")
        if not record_id:
            record_id = f"line-{line}"
            problems.append("record_id: empty; the line number stands in for it")
        if record_id in seen:
            problems.append("record_id: appears more than once; each row is linked on its own")
        seen.add(record_id)
        dob = _date(value("date_of_birth"), "date_of_birth", problems)
        expected = _date(value("expected_date"), "expected_date", problems)
        other = value("other_names")
        yield (
            line,
            PersonRecord(
                record_id=record_id,
                source=value("source"),
                given_names=value("given_name") or None,
                family_name=value("family_name") or None,
                other_names=tuple(part.strip() for part in other.split(";") if part.strip()),
                date_of_birth=dob,
                dob_estimated=value("dob_estimated").lower() in TRUE_WORDS,
                expected_date=expected,
                sex=value("sex") or None,
                address=value("address") or None,
                postcode=value("postcode") or None,
                nhs_number=value("nhs_number") or None,
                upn=value("upn") or None,
            ),
            problems,
        )


def _progress_printer(stream: TextIO, started: float) -> Callable[[int, int], None]:
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 2.0:
            return
        last[0] = now
        elapsed = now - started
        print(
            f"link-file: scored {done:,} of {total:,} records "
            f"({100 * done / max(total, 1):.0f}%, {elapsed:.0f} s)",
            file=stream,
            flush=True,
        )

    return show


def link_file(
    source: Path,
    target: Path,
    *,
    model: LinkageModel | None = None,
    workers: int | None = None,
    quiet: bool = False,
) -> LinkFileSummary:
    """Link ``source`` into ``target``; progress goes to standard error unless ``quiet``."""
    started = time.monotonic()
    progress = None if quiet else sys.stderr
    model = model or LinkageModel.load()
    prepared: list[Prepared] = []
    problems: list[RowProblem] = []
    with source.open(newline="", encoding="utf-8-sig") as file:
        for line, record, row_problems in read_records(file):
            ready = prepare(record)
            for problem in row_problems + ready.problems:
                problems.append(RowProblem(line, record.record_id, problem))
            prepared.append(ready)
    if progress is not None:
        print(
            f"link-file: read {len(prepared):,} records "
            f"({len(problems):,} values refused) in {time.monotonic() - started:.0f} s",
            file=progress,
            flush=True,
        )
    show = _progress_printer(progress, started) if progress is not None else None
    labels, probabilities = batch.link(prepared, model, workers=workers, progress=show)
    person_ids: dict[int, str] = {}
    with target.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(("record_id", "person_id", "match_probability"))
        for ready, label, probability in zip(prepared, labels, probabilities, strict=True):
            person = person_ids.setdefault(label, f"person-{len(person_ids) + 1:07d}")
            writer.writerow((ready.record_id, person, f"{probability:.6f}"))
    return LinkFileSummary(
        records=len(prepared),
        persons=len(person_ids),
        seconds=time.monotonic() - started,
        problems=problems,
    )
