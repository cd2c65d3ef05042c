"""Every query of the linking service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.linking.matching.blocking import block_limit
from services.linking.matching.moves import home_key
from services.linking.matching.records import FEATURE_COLUMNS
from services.linking.models import (
    Household,
    HouseholdMember,
    LinkHistory,
    Merge,
    Person,
    PersonRecord,
    RecordKey,
    Relationship,
    ReviewItem,
)

STORED_COLUMNS = (
    "date_of_birth",
    "dob_estimated",
    "expected_date",
    "sex",
    "postcode",
    "nhs_number",
    "upn",
    *FEATURE_COLUMNS,
)
_SELECTED = ", ".join(f"p.{column}" for column in ("id", "person_id", *STORED_COLUMNS))
# The resolve's queries, sent through the driver (``LinkingRepository._driver``) with asyncpg's
# own placeholders. One round trip: each key's records up to one more than the largest block
# searched; a key with more records than that is too common to tell anyone apart and is skipped
# (as in a batch).
CANDIDATES_QUERY = f"""
    WITH looked AS (
        SELECT found.record_id, wanted.cap, count(*) OVER (PARTITION BY wanted.key) AS block
        FROM unnest($1::text[], $2::int[]) AS wanted(key, cap)
        CROSS JOIN LATERAL (
            SELECT k.record_id FROM linking.record_keys k
            WHERE k.key = wanted.key LIMIT wanted.cap + 1
        ) AS found
    )
    SELECT {_SELECTED} FROM linking.person_records p
    WHERE p.id IN (SELECT record_id FROM looked WHERE block <= cap)
"""
AT_HOMES_QUERY = f"""
    SELECT {_SELECTED} FROM linking.record_keys k
    JOIN linking.person_records p ON p.id = k.record_id
    WHERE k.key = ANY($1::text[])
    LIMIT $2
"""
ACCESS_LOG_COLUMNS = (
    "principal",
    "organisation_code",
    "agency",
    "action",
    "object_type",
    "object_id",
    "outcome",
)
_ARRAYS = ", ".join(f"${n}::text[]" for n in range(1, len(ACCESS_LOG_COLUMNS) + 1))
ACCESS_LOG_QUERY = f"""
    INSERT INTO linking.access_log ({", ".join(ACCESS_LOG_COLUMNS)})
    SELECT * FROM unnest({_ARRAYS})
"""


class LinkingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Records and persons ---------------------------------------------------------------------

    async def record_by_subject(self, subject_id: uuid.UUID) -> PersonRecord | None:
        result = await self.session.execute(
            select(PersonRecord).where(PersonRecord.subject_id == subject_id)
        )
        return result.scalar_one_or_none()

    async def record(self, record_id: uuid.UUID) -> PersonRecord | None:
        return await self.session.get(PersonRecord, record_id)

    async def candidate_rows(self, keys: Sequence[str], max_block: int) -> list[Any]:
        """The stored columns (and features) of the records sharing a blocking key with the one
        being resolved, each once; a key shared by more than ``max_block`` records is skipped.
        Plain rows, no ORM objects, as this is the hot path."""
        if not keys:
            return []
        driver = await self._driver()
        return list(
            await driver.fetch(
                CANDIDATES_QUERY, list(keys), [block_limit(key, max_block) for key in keys]
            )
        )

    async def records_at(self, homes: Sequence[str], limit: int = 500) -> list[Any]:
        """The records at any of these homes (as ``candidate_rows``; a record at two of them
        comes twice): who was recorded where, for households' moves."""
        if not homes:
            return []
        driver = await self._driver()
        return list(await driver.fetch(AT_HOMES_QUERY, [home_key(home) for home in homes], limit))

    async def _driver(self) -> Any:
        """The driver's own connection, in the session's transaction: rows come as asyncpg
        records (tuples), without SQLAlchemy's row objects, on the resolve's hot path."""
        connection = await self.session.connection()
        raw = await connection.get_raw_connection()
        return raw.driver_connection

    async def add_person(self, person: Person) -> None:
        self.session.add(person)
        await self.session.flush()

    async def add_record(self, record: PersonRecord, keys: Sequence[str]) -> None:
        self.session.add(record)
        await self.session.flush()
        if keys:
            await self.session.execute(
                pg_insert(RecordKey)
                .values([{"key": key, "record_id": record.id} for key in keys])
                .on_conflict_do_nothing()
            )

    async def person(self, person_id: uuid.UUID, *, lock: bool = False) -> Person | None:
        statement = select(Person).where(Person.id == person_id)
        if lock:
            statement = statement.with_for_update()
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def records_of(self, person_id: uuid.UUID) -> list[PersonRecord]:
        result = await self.session.execute(
            select(PersonRecord)
            .where(PersonRecord.person_id == person_id)
            .order_by(PersonRecord.recorded_at, PersonRecord.id)
        )
        return list(result.scalars())

    async def records_of_many(self, person_ids: Sequence[uuid.UUID]) -> list[PersonRecord]:
        if not person_ids:
            return []
        result = await self.session.execute(
            select(PersonRecord).where(PersonRecord.person_id.in_(list(person_ids)))
        )
        return list(result.scalars())

    async def persons_at(
        self, postcode: str, family_name: str, *, exclude: uuid.UUID
    ) -> list[uuid.UUID]:
        """Persons with a record at this postcode under this family name (any spelling case)."""
        result = await self.session.execute(
            select(PersonRecord.person_id)
            .where(PersonRecord.postcode == postcode)
            .where(func.upper(PersonRecord.family_name) == family_name.upper())
            .where(PersonRecord.person_id != exclude)
            .distinct()
            .limit(50)
        )
        return [row[0] for row in result.all()]

    async def move_records(
        self, record_ids: Sequence[uuid.UUID], from_person: uuid.UUID, to_person: uuid.UUID
    ) -> list[uuid.UUID]:
        result = await self.session.execute(
            update(PersonRecord)
            .where(PersonRecord.id.in_(list(record_ids)))
            .where(PersonRecord.person_id == from_person)
            .values(person_id=to_person)
            .returning(PersonRecord.id)
        )
        return [row[0] for row in result.all()]

    async def add_history(self, entries: Sequence[LinkHistory]) -> None:
        self.session.add_all(entries)
        await self.session.flush()

    async def history_of(self, person_id: uuid.UUID) -> list[LinkHistory]:
        result = await self.session.execute(
            select(LinkHistory)
            .where(
                or_(LinkHistory.person_id == person_id, LinkHistory.previous_person_id == person_id)
            )
            .order_by(LinkHistory.id)
        )
        return list(result.scalars())

    # Review queue ----------------------------------------------------------------------------

    async def add_review(self, item: ReviewItem) -> bool:
        """Add a review item unless the same record and candidate already have one."""
        result = await self.session.execute(
            pg_insert(ReviewItem)
            .values(
                id=item.id,
                record_id=item.record_id,
                candidate_person_id=item.candidate_person_id,
                candidate_record_id=item.candidate_record_id,
                match_probability=item.match_probability,
                reason=item.reason,
                evidence=item.evidence,
                status=item.status,
                created_at=item.created_at,
            )
            .on_conflict_do_nothing()
            .returning(ReviewItem.id)
        )
        return result.first() is not None

    async def review(self, review_id: uuid.UUID, *, lock: bool = False) -> ReviewItem | None:
        statement = select(ReviewItem).where(ReviewItem.id == review_id)
        if lock:
            statement = statement.with_for_update()
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def reviews(
        self, status: str | None, limit: int, offset: int
    ) -> tuple[list[ReviewItem], int]:
        conditions = [] if status is None else [ReviewItem.status == status]
        total = await self.session.scalar(
            select(func.count()).select_from(ReviewItem).where(*conditions)
        )
        result = await self.session.execute(
            select(ReviewItem)
            .where(*conditions)
            .order_by(ReviewItem.match_probability.desc(), ReviewItem.created_at)
            .limit(limit)
            .offset(offset)
        )
        return list(result.scalars()), int(total or 0)

    async def close_reviews_between(
        self, person_a: uuid.UUID, person_b: uuid.UUID, now: datetime, by: str
    ) -> None:
        """Open items that a merge has answered (the record and candidate are one person now)."""
        records = select(PersonRecord.id).where(PersonRecord.person_id.in_([person_a, person_b]))
        await self.session.execute(
            update(ReviewItem)
            .where(ReviewItem.status == "open")
            .where(ReviewItem.record_id.in_(records.scalar_subquery()))
            .where(ReviewItem.candidate_person_id.in_([person_a, person_b]))
            .values(status="accepted", decided_at=now, decided_by=by, decision_note="merged")
        )

    # Merges ----------------------------------------------------------------------------------

    async def add_merge(self, merge: Merge) -> None:
        self.session.add(merge)
        await self.session.flush()

    async def merge(self, merge_id: uuid.UUID, *, lock: bool = False) -> Merge | None:
        statement = select(Merge).where(Merge.id == merge_id)
        if lock:
            statement = statement.with_for_update()
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def merges_of(self, person_id: uuid.UUID) -> list[Merge]:
        result = await self.session.execute(
            select(Merge)
            .where(or_(Merge.survivor_person_id == person_id, Merge.merged_person_id == person_id))
            .order_by(Merge.merged_at)
        )
        return list(result.scalars())

    # Relationships and households ------------------------------------------------------------

    async def upsert_relationship(
        self,
        *,
        person_id: uuid.UUID,
        related_person_id: uuid.UUID,
        kind: str,
        parental_responsibility: bool | None,
        lives_with: bool | None,
        inferred: bool,
        source_reference: str,
        now: datetime,
    ) -> None:
        statement = pg_insert(Relationship).values(
            person_id=person_id,
            related_person_id=related_person_id,
            kind=kind,
            parental_responsibility=parental_responsibility,
            lives_with=lives_with,
            inferred=inferred,
            source_reference=source_reference,
            first_seen_at=now,
            last_seen_at=now,
        )
        updates: dict[str, object] = {"last_seen_at": now}
        if not inferred:
            # What an agency reported replaces what was inferred or reported before.
            updates.update(
                parental_responsibility=parental_responsibility,
                lives_with=lives_with,
                inferred=False,
                source_reference=source_reference,
            )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["person_id", "related_person_id", "kind"], set_=updates
            )
        )

    async def relationships_of(self, person_ids: Sequence[uuid.UUID]) -> list[Relationship]:
        if not person_ids:
            return []
        ids = list(person_ids)
        result = await self.session.execute(
            select(Relationship)
            .where(or_(Relationship.person_id.in_(ids), Relationship.related_person_id.in_(ids)))
            .order_by(Relationship.id)
        )
        return list(result.scalars())

    async def repoint_relationships(
        self, from_person: uuid.UUID, to_person: uuid.UUID, only: Sequence[int] | None = None
    ) -> list[int]:
        """Point a person's relationships at another person; those the other already has are
        left on the first (they are duplicates) and not moved."""
        moved: list[int] = []
        for column, other in (
            (Relationship.person_id, Relationship.related_person_id),
            (Relationship.related_person_id, Relationship.person_id),
        ):
            conditions = [column == from_person, other != to_person]
            if only is not None:
                conditions.append(Relationship.id.in_(list(only)))
            rows = await self.session.execute(select(Relationship).where(*conditions))
            for relationship in rows.scalars():
                source = relationship.person_id
                target = relationship.related_person_id
                new_source = to_person if source == from_person else source
                new_target = to_person if target == from_person else target
                clash = await self.session.scalar(
                    select(func.count())
                    .select_from(Relationship)
                    .where(Relationship.person_id == new_source)
                    .where(Relationship.related_person_id == new_target)
                    .where(Relationship.kind == relationship.kind)
                )
                if clash:
                    continue
                relationship.person_id = new_source
                relationship.related_person_id = new_target
                moved.append(relationship.id)
        await self.session.flush()
        return moved

    async def households_of(self, person_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        if not person_ids:
            return []
        result = await self.session.execute(
            select(Household.id)
            .where(
                Household.id.in_(
                    select(HouseholdMember.household_id).where(
                        HouseholdMember.person_id.in_(list(person_ids))
                    )
                )
            )
            .order_by(Household.created_at, Household.id)
        )
        return [row[0] for row in result.all()]

    async def add_household(self, household: Household) -> None:
        self.session.add(household)
        await self.session.flush()

    async def household(self, household_id: uuid.UUID) -> Household | None:
        return await self.session.get(Household, household_id)

    async def add_member(
        self, household_id: uuid.UUID, person_id: uuid.UUID, role: str, now: datetime
    ) -> bool:
        result = await self.session.execute(
            pg_insert(HouseholdMember)
            .values(household_id=household_id, person_id=person_id, role=role, since=now)
            .on_conflict_do_nothing()
            .returning(HouseholdMember.person_id)
        )
        return result.first() is not None

    async def members(self, household_id: uuid.UUID) -> list[HouseholdMember]:
        result = await self.session.execute(
            select(HouseholdMember)
            .where(HouseholdMember.household_id == household_id)
            .order_by(HouseholdMember.since, HouseholdMember.person_id)
        )
        return list(result.scalars())

    async def move_memberships(
        self, from_person: uuid.UUID, to_person: uuid.UUID
    ) -> list[dict[str, str | bool]]:
        """Move a person's household memberships to another person; returns each household and
        whether the other person joined it by the move (so that an unmerge can undo exactly)."""
        rows = await self.session.execute(
            select(HouseholdMember).where(HouseholdMember.person_id == from_person)
        )
        moved: list[dict[str, str | bool]] = []
        for member in list(rows.scalars()):
            already = await self.session.scalar(
                select(func.count())
                .select_from(HouseholdMember)
                .where(HouseholdMember.household_id == member.household_id)
                .where(HouseholdMember.person_id == to_person)
            )
            if not already:
                await self.session.execute(
                    pg_insert(HouseholdMember).values(
                        household_id=member.household_id,
                        person_id=to_person,
                        role=member.role,
                        since=member.since,
                    )
                )
            await self.session.execute(
                delete(HouseholdMember).where(
                    and_(
                        HouseholdMember.household_id == member.household_id,
                        HouseholdMember.person_id == from_person,
                    )
                )
            )
            moved.append({"household_id": str(member.household_id), "joined": not already})
        return moved

    async def remove_member(self, household_id: uuid.UUID, person_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(HouseholdMember)
            .where(HouseholdMember.household_id == household_id)
            .where(HouseholdMember.person_id == person_id)
        )

    # Access log ------------------------------------------------------------------------------

    async def log_access(self, entries: Sequence[dict[str, str]]) -> None:
        """One statement, of one text whatever the number of rows: an ORM insert of n rows was
        compiled anew for each n, a tenth of a resolve's CPU over HTTP."""
        if entries:
            driver = await self._driver()  # in the session's transaction, as every read is
            await driver.execute(
                ACCESS_LOG_QUERY,
                *([entry[column] for entry in entries] for column in ACCESS_LOG_COLUMNS),
            )


def refresh_features(connection: Connection, page: int = 5000) -> int:
    """Prepare every stored record again with the matching code of now: its feature columns
    and its keys (blocking and homes). For a migration that changes what ``prepare`` or
    ``blocking`` derives; returns how many records it refreshed."""
    from services.linking.matching import blocking
    from services.linking.matching.records import features, prepare
    from services.linking.service import record_data

    table = PersonRecord.__table__
    connection.execute(delete(RecordKey))
    last: uuid.UUID | None = None
    done = 0
    while True:
        query = select(table).order_by(table.c.id).limit(page)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = connection.execute(query).all()
        if not rows:
            return done
        updates: list[dict[str, Any]] = []
        found: list[dict[str, Any]] = []
        for row in rows:
            ready = prepare(record_data(row), trusted=True)
            updates.append(
                {"record": row.id, **{f"new_{k}": v for k, v in features(ready).items()}}
            )
            found.extend(
                {"key": key, "record_id": row.id}
                for key in [*blocking.keys(ready), *(home_key(home) for home in ready.homes)]
            )
        connection.execute(
            update(PersonRecord)
            .where(PersonRecord.id == bindparam("record"))
            .values({column: bindparam(f"new_{column}") for column in FEATURE_COLUMNS}),
            updates,
        )
        if found:
            connection.execute(pg_insert(RecordKey).on_conflict_do_nothing(), found)
        done += len(rows)
        last = rows[-1].id
