"""What the experiment service keeps about people: exposures, sticky variants, goal events.

Four tables, all keyed by the canonical profile id as this service last
learned it from the change feed:

- `experiments_exposure`: every exposure, once per `exposure_id`;
- `experiments_assignment`: the sticky record, one row per experiment and
  person: the first exposure's variant, when, and whether its copy on the
  profile (the `_variant:` trait) is written yet (`synced`), with the
  person's goal metric before that exposure (the CUPED covariate);
- `experiments_goal_event`: the goal events the change feed brought;
- `experiments_alias`: merged profile ids and their survivors, so an
  exposure sent under an id merged a moment ago lands on the survivor.

Everything here is blocking (run it through `Database.run`); datetimes are
aware UTC in and out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, and_, delete, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from tessera.db import Database
from tessera.experiments.domain.exposures import Exposure, first_exposure
from tessera.experiments.domain.results import Outcome
from tessera.sticky import StickyVariant

__all__ = [
    "AliasRow",
    "AssignmentRow",
    "ExposureRow",
    "ExposureStore",
    "GoalEventRow",
    "PendingSticky",
    "SplitRow",
]

# Ids: profile ids of the profile service are 40 characters; exposures from
# other callers may carry any id up to the guard's limit.
_ID = 256
_KEY = 64


def _aware(moment: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is UTC (protobuf's ToDatetime, SQLite's reads)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


class ExposureRow(SQLModel, table=True):
    """One exposure, stored once per exposure_id."""

    __tablename__ = "experiments_exposure"

    exposure_id: str = Field(primary_key=True, max_length=_ID)
    experiment_key: str = Field(max_length=_KEY)
    variant_key: str = Field(max_length=_KEY)
    profile_id: str = Field(index=True, max_length=_ID)
    in_holdout: bool = False
    seen_at: dt.datetime
    received_at: dt.datetime


class AssignmentRow(SQLModel, table=True):
    """The sticky record: a person's first exposure to an experiment."""

    __tablename__ = "experiments_assignment"
    __table_args__ = (Index("ix_experiments_assignment_profile", "profile_id"),)

    experiment_key: str = Field(primary_key=True, max_length=_KEY)
    profile_id: str = Field(primary_key=True, max_length=_ID)
    variant_key: str = Field(max_length=_KEY)
    in_holdout: bool = False
    exposed_at: dt.datetime
    exposure_id: str = Field(max_length=_ID)
    version: int = 0
    """The experiment's version when the exposure was recorded: its split then."""
    pre_value: float | None = None
    """The goal metric in the days before the exposure (CUPED); None until synced."""
    synced: bool = Field(default=False, index=True)
    """True once the profile carries this variant as its `_variant:` trait."""


class GoalEventRow(SQLModel, table=True):
    """A goal event from the change feed, by its feed sequence."""

    __tablename__ = "experiments_goal_event"
    __table_args__ = (Index("ix_experiments_goal_event_person", "profile_id", "event_type"),)

    sequence: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    profile_id: str = Field(max_length=_ID)
    event_type: str = Field(max_length=_ID)
    occurred_at: dt.datetime
    revenue: float = 0.0


class SplitRow(SQLModel, table=True):
    """The weights of one version of an experiment, as people were assigned under it."""

    __tablename__ = "experiments_split"

    experiment_key: str = Field(primary_key=True, max_length=_KEY)
    version: int = Field(primary_key=True)
    weights: dict[str, float] = Field(sa_column=Column(JSON, nullable=False))


class AliasRow(SQLModel, table=True):
    """A merged profile id and the survivor it resolves to."""

    __tablename__ = "experiments_alias"

    alias_id: str = Field(primary_key=True, max_length=_ID)
    profile_id: str = Field(index=True, max_length=_ID)


TABLES: list[type[SQLModel]] = [ExposureRow, AssignmentRow, GoalEventRow, SplitRow, AliasRow]
"""This module's tables (the service's `migrations.tables()` lists them)."""


@dataclass(frozen=True, slots=True)
class PendingSticky:
    """A sticky record whose copy on the profile is not written yet."""

    experiment_key: str
    profile_id: str
    exposure_id: str
    sticky: StickyVariant


class ExposureStore:
    """Exposures, sticky records, goal events and aliases in the service's database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine: Engine = database.engine
        self.postgres = self.engine.dialect.name == "postgresql"

    @property
    def tables(self) -> list[type[SQLModel]]:
        """The tables it reads and writes (created by the service's migrations)."""
        return list(TABLES)

    def _insert(self, model: type[SQLModel]) -> Any:
        table = model.__table__  # type: ignore[attr-defined]
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    # Exposures

    def record(
        self,
        exposures: Sequence[Exposure],
        now: dt.datetime,
        splits: Mapping[str, tuple[int, dict[str, float]]] | None = None,
    ) -> tuple[int, int]:
        """Store exposures not stored before; (accepted, duplicates).

        An exposure dated after `now` is taken as seen `now`. Each person's
        sticky record keeps their earliest exposure, whichever batch and
        replica brought it (the upsert only moves a record to an earlier
        exposure), and is marked for its trait to be written again.
        `splits` gives each experiment's version and weights now: the record
        keeps the version, and the weights of each version are kept once.
        """
        splits = splits or {}
        unique: dict[str, Exposure] = {}
        for exposure in exposures:
            unique.setdefault(exposure.exposure_id, exposure)
        with Session(self.engine) as session:
            canonical = self._canonical(session, {e.profile_id for e in unique.values()})
            stored = [
                replace(
                    e,
                    profile_id=canonical.get(e.profile_id, e.profile_id),
                    seen_at=min(e.seen_at, now),
                )
                for e in unique.values()
            ]
            rows = [
                {
                    "exposure_id": e.exposure_id,
                    "experiment_key": e.experiment_key,
                    "variant_key": e.variant_key,
                    "profile_id": e.profile_id,
                    "in_holdout": e.in_holdout,
                    "seen_at": _aware(e.seen_at),
                    "received_at": _aware(now),
                }
                for e in stored
            ]
            inserted = self._insert(ExposureRow).values(rows).on_conflict_do_nothing()
            accepted = set(
                session.execute(inserted.returning(col(ExposureRow.exposure_id))).scalars()
            )
            firsts: dict[tuple[str, str], Exposure] = {}
            for exposure in stored:
                if exposure.exposure_id not in accepted:
                    continue
                key = (exposure.experiment_key, exposure.profile_id)
                held = firsts.get(key)
                firsts[key] = exposure if held is None else first_exposure([held, exposure])
            if firsts:
                self._keep_earliest(session, list(firsts.values()), splits)
                self._keep_splits(session, {k for k, _ in firsts}, splits)
            session.commit()
        return len(accepted), len(exposures) - len(accepted)

    def _keep_splits(
        self,
        session: Session,
        experiment_keys: set[str],
        splits: Mapping[str, tuple[int, dict[str, float]]],
    ) -> None:
        rows = [
            {"experiment_key": key, "version": splits[key][0], "weights": splits[key][1]}
            for key in sorted(experiment_keys)
            if key in splits
        ]
        if rows:
            session.execute(self._insert(SplitRow).values(rows).on_conflict_do_nothing())

    def splits(self, experiment_key: str) -> dict[int, dict[str, float]]:
        """The weights of each version of the experiment people were exposed under."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(SplitRow).where(col(SplitRow.experiment_key) == experiment_key)
            ).all()
            return {row.version: dict(row.weights) for row in rows}

    def _keep_earliest(
        self,
        session: Session,
        exposures: list[Exposure],
        splits: Mapping[str, tuple[int, dict[str, float]]],
    ) -> None:
        """Upsert sticky records so that each holds the earliest exposure seen."""
        table = AssignmentRow.__table__  # type: ignore[attr-defined]
        statement = self._insert(AssignmentRow).values(
            [
                {
                    "experiment_key": e.experiment_key,
                    "profile_id": e.profile_id,
                    "variant_key": e.variant_key,
                    "in_holdout": e.in_holdout,
                    "exposed_at": _aware(e.seen_at),
                    "exposure_id": e.exposure_id,
                    "version": splits.get(e.experiment_key, (0, {}))[0],
                    "pre_value": None,
                    "synced": False,
                }
                for e in exposures
            ]
        )
        new = statement.excluded
        # (time, variant key, held out) ordered as tessera.sticky.earliest orders them.
        same_time = new.exposed_at == table.c.exposed_at
        earlier = or_(
            new.exposed_at < table.c.exposed_at,
            and_(same_time, new.variant_key < table.c.variant_key),
            and_(
                same_time,
                new.variant_key == table.c.variant_key,
                new.in_holdout.is_(False),
                table.c.in_holdout.is_(True),
            ),
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["experiment_key", "profile_id"],
                set_={
                    "variant_key": new.variant_key,
                    "in_holdout": new.in_holdout,
                    "exposed_at": new.exposed_at,
                    "exposure_id": new.exposure_id,
                    "version": new.version,
                    "pre_value": None,
                    "synced": False,
                },
                where=earlier,
            )
        )

    def _canonical(self, session: Session, profile_ids: Iterable[str]) -> dict[str, str]:
        """Merged ids among `profile_ids` -> their survivors."""
        ids = list(profile_ids)
        if not ids:
            return {}
        rows = session.exec(select(AliasRow).where(col(AliasRow.alias_id).in_(ids))).all()
        return {row.alias_id: row.profile_id for row in rows}

    # Sticky records

    def sticky(self, profile_id: str) -> dict[str, StickyVariant]:
        """Experiment key -> the person's sticky variant (`profile_id` may be merged)."""
        with Session(self.engine) as session:
            canonical = self._canonical(session, [profile_id]).get(profile_id, profile_id)
            rows = session.exec(
                select(AssignmentRow).where(col(AssignmentRow.profile_id) == canonical)
            ).all()
            return {
                row.experiment_key: StickyVariant(
                    row.variant_key, row.in_holdout, _aware(row.exposed_at)
                )
                for row in rows
            }

    def pending(self, limit: int) -> list[PendingSticky]:
        """Sticky records whose trait is not written yet, oldest exposure first."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(AssignmentRow)
                .where(col(AssignmentRow.synced).is_(False))
                .order_by(col(AssignmentRow.exposed_at))
                .limit(limit)
            ).all()
            return [
                PendingSticky(
                    row.experiment_key,
                    row.profile_id,
                    row.exposure_id,
                    StickyVariant(row.variant_key, row.in_holdout, _aware(row.exposed_at)),
                )
                for row in rows
            ]

    def count_pending(self) -> int:
        """How many sticky records wait for their trait."""
        with Session(self.engine) as session:
            count = session.exec(
                select(func.count()).where(col(AssignmentRow.synced).is_(False))
            ).one()
            return int(count)

    def synced(self, done: Sequence[tuple[PendingSticky, float | None]]) -> None:
        """Mark sticky records written to their profiles, with their pre-exposure values.

        A record that moved to another exposure meanwhile (an earlier one
        arrived, a merge re-keyed it) stays pending: its new value is written
        next.
        """
        if not done:
            return
        with Session(self.engine) as session:
            for item, pre_value in done:
                session.execute(
                    update(AssignmentRow)
                    .where(
                        col(AssignmentRow.experiment_key) == item.experiment_key,
                        col(AssignmentRow.profile_id) == item.profile_id,
                        col(AssignmentRow.exposure_id) == item.exposure_id,
                    )
                    .values(synced=True, pre_value=pre_value)
                )
            session.commit()

    # People: merges and erasures

    def erase(self, session: Session, profile_ids: Sequence[str]) -> None:
        """Remove everything kept about these profile ids, in `session`'s transaction."""
        ids = list(profile_ids)
        if not ids:
            return
        session.execute(delete(AssignmentRow).where(col(AssignmentRow.profile_id).in_(ids)))
        session.execute(delete(ExposureRow).where(col(ExposureRow.profile_id).in_(ids)))
        session.execute(delete(GoalEventRow).where(col(GoalEventRow.profile_id).in_(ids)))
        session.execute(
            delete(AliasRow).where(
                or_(col(AliasRow.profile_id).in_(ids), col(AliasRow.alias_id).in_(ids))
            )
        )

    def forget(self, profile_id: str) -> None:
        """Erase a profile the profile service does not know (erased, or never there)."""
        with Session(self.engine) as session:
            self.erase(session, [profile_id])
            session.commit()

    def merge(self, session: Session, survivor: str, merged: str) -> None:
        """Re-key `merged` onto `survivor`; per experiment the earlier exposure stays sticky.

        Runs in `session`'s transaction. A record that moves to the survivor
        is marked for its trait to be written (the profile service's merge
        keeps the earlier trait too; writing it again is harmless).
        """
        if survivor == merged:
            return
        session.execute(
            update(AliasRow).where(col(AliasRow.profile_id) == merged).values(profile_id=survivor)
        )
        if session.get(AliasRow, merged) is None:
            session.add(AliasRow(alias_id=merged, profile_id=survivor))
        theirs = session.exec(
            select(AssignmentRow).where(col(AssignmentRow.profile_id) == merged)
        ).all()
        for row in theirs:
            kept = session.get(AssignmentRow, (row.experiment_key, survivor))
            if kept is None or (row.exposed_at, row.variant_key, row.in_holdout) < (
                kept.exposed_at,
                kept.variant_key,
                kept.in_holdout,
            ):
                if kept is not None:
                    session.delete(kept)
                    session.flush()
                session.add(
                    AssignmentRow(
                        experiment_key=row.experiment_key,
                        profile_id=survivor,
                        variant_key=row.variant_key,
                        in_holdout=row.in_holdout,
                        exposed_at=row.exposed_at,
                        exposure_id=row.exposure_id,
                        version=row.version,
                        pre_value=None,
                        synced=False,
                    )
                )
            session.delete(row)
        session.flush()
        session.execute(
            update(ExposureRow)
            .where(col(ExposureRow.profile_id) == merged)
            .values(profile_id=survivor)
        )
        session.execute(
            update(GoalEventRow)
            .where(col(GoalEventRow.profile_id) == merged)
            .values(profile_id=survivor)
        )

    def add_goal_event(
        self,
        session: Session,
        sequence: int,
        profile_id: str,
        event_type: str,
        occurred_at: dt.datetime,
        revenue: float,
    ) -> None:
        """Keep a goal event from the feed (under the survivor when the id was merged)."""
        canonical = self._canonical(session, [profile_id]).get(profile_id, profile_id)
        session.execute(
            self._insert(GoalEventRow)
            .values(
                sequence=sequence,
                profile_id=canonical,
                event_type=event_type,
                occurred_at=_aware(occurred_at),
                revenue=revenue,
            )
            .on_conflict_do_nothing()
        )

    # Results

    def people(self, experiment_key: str) -> list[tuple[str, Outcome]]:
        """Every person exposed to the experiment, with their sticky variant."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(AssignmentRow).where(col(AssignmentRow.experiment_key) == experiment_key)
            ).all()
            return [
                (
                    row.profile_id,
                    Outcome(
                        row.variant_key,
                        row.in_holdout,
                        _aware(row.exposed_at),
                        row.pre_value,
                        row.version,
                    ),
                )
                for row in rows
            ]

    def goal_events(
        self, experiment_key: str, event_type: str
    ) -> list[tuple[str, dt.datetime, float]]:
        """Goal events of the experiment's people at or after their first exposure."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(GoalEventRow.profile_id, GoalEventRow.occurred_at, GoalEventRow.revenue)
                .join(
                    AssignmentRow,
                    and_(
                        col(AssignmentRow.profile_id) == col(GoalEventRow.profile_id),
                        col(AssignmentRow.experiment_key) == experiment_key,
                    ),
                )
                .where(
                    col(GoalEventRow.event_type) == event_type,
                    col(GoalEventRow.occurred_at) >= col(AssignmentRow.exposed_at),
                )
            ).all()
            return [(pid, _aware(at), float(revenue)) for pid, at, revenue in rows]
