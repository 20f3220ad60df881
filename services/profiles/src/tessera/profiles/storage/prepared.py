"""Statements compiled once per dialect and run on the DBAPI cursor.

The profile service's write path (storing a batch of events, marking it
applied, numbering the change feed) runs a few small statements per batch.
Through SQLAlchemy's execution layers (the compiled cache, parameter
processing, expanding lists, result rows) they cost more CPU than the
database spent on them; here a statement is compiled once, and each run
does only what the driver needs: the SQL text, the parameters in the
driver's paramstyle, converted as the columns' types convert them. They run
on the cursor of a transaction SQLAlchemy began (`connection.connection`),
so transactions, pooling and errors stay SQLAlchemy's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Dialect, String, Text, TypeDecorator, any_, bindparam, type_coerce

IN_LIST_LIMIT = 256
"""Most values one `IN` list binds (`run_in`); longer lists are run in parts."""


@dataclass(frozen=True)
class Prepared:
    """A statement compiled for one dialect, as the driver takes it.

    The SQL text; the order of its parameters for a positional paramstyle
    (None for a named one); the values the statement binds itself (a
    literal compared with, a LIMIT); and the conversion of each parameter
    that has one, from the same types SQLAlchemy would use (on SQLite: JSON
    to text, times to text, booleans to integers; on PostgreSQL: JSON).
    """

    sql: str
    order: tuple[str, ...] | None
    fixed: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> Prepared:
        """`statement` compiled for `dialect`."""
        compiled = statement.compile(dialect=dialect)
        processors: dict[str, Callable[[Any], Any]] = {}
        fixed: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                fixed[name] = bind.value if process is None else process(bind.value)
            elif process is not None:
                processors[name] = process
        order = compiled.positiontup
        return cls(str(compiled), None if order is None else tuple(order), fixed, processors)

    def encode(self, name: str, value: Any) -> Any:
        """`value` of parameter `name` as the driver takes it."""
        process = self.processors.get(name)
        return value if process is None else process(value)

    def args(self, params: dict[str, Any], encoded: Collection[str] = ()) -> Any:
        """The driver's parameters for `params` (changed in place); those named in
        `encoded` are converted already (`encode`)."""
        for name, process in self.processors.items():
            if name in params and name not in encoded:
                params[name] = process(params[name])
        if self.fixed:
            params.update(self.fixed)
        return params if self.order is None else [params[n] for n in self.order]


@functools.cache
def prepared(dialect: Dialect, statement: Any) -> Prepared:
    """`statement` (built once, kept) compiled for `dialect`, once."""
    return Prepared.of(statement, dialect)


def run(cursor: Any, dialect: Dialect, statement: Any, **params: Any) -> list[Sequence[Any]]:
    """Run `statement` with `params`; the rows it returns (none for a write)."""
    compiled = prepared(dialect, statement)
    cursor.execute(compiled.sql, compiled.args(params))
    return list(cursor.fetchall()) if cursor.description is not None else []


def holds_text(kind: Any) -> bool:
    """Whether a column type holds strings."""
    return isinstance(kind.impl if isinstance(kind, TypeDecorator) else kind, String)


def in_list(column: Any, count: int | None) -> Any:
    """`column IN (:i0, :i1, ...)` with `count` parameters, for `run_in`; with None,
    `column = ANY(:values)`, one array parameter (PostgreSQL)."""
    if count is None:
        # Strings as unbounded text: a cast to the column's VARCHAR(n) would cut
        # a longer value down to one that may match another row.
        # (type_coerce: compared with the column, the parameter would take its type.)
        item = Text() if holds_text(column.type) else column.type
        return column == any_(type_coerce(bindparam("values", type_=ARRAY(item)), ARRAY(item)))
    return column.in_([bindparam(f"i{n}", type_=column.type) for n in range(count)])


@functools.cache
def _prepared_in(
    dialect: Dialect, statement_for: Callable[[int | None], Any], count: int | None
) -> Prepared:
    return Prepared.of(statement_for(count), dialect)


def run_in(
    cursor: Any,
    dialect: Dialect,
    statement_for: Callable[[int | None], Any],
    values: Sequence[Any],
    **params: Any,
) -> list[Sequence[Any]]:
    """Run the statement `statement_for(n)` builds over `values`, its `IN` list of n
    values (`in_list`); the rows it returns.

    PostgreSQL takes the values as one array (`statement_for(None)`): one
    short text, which the driver converts once and the server prepares.
    Elsewhere the text is compiled for list lengths that are powers of two,
    the list padded with its last value (a value twice in an `IN` list
    matches nothing more), so that a handful of texts serve every batch
    size; lists longer than IN_LIST_LIMIT run in parts, in order.
    """
    if dialect.name == "postgresql":
        if not values:
            return []
        compiled = _prepared_in(dialect, statement_for, None)
        cursor.execute(compiled.sql, compiled.args({**params, "values": list(values)}))
        return list(cursor.fetchall()) if cursor.description is not None else []
    rows: list[Sequence[Any]] = []
    for start in range(0, len(values), IN_LIST_LIMIT):
        part = list(values[start : start + IN_LIST_LIMIT])
        count = 1 << (len(part) - 1).bit_length()
        part.extend(part[-1:] * (count - len(part)))
        compiled = _prepared_in(dialect, statement_for, count)
        cursor.execute(
            compiled.sql, compiled.args({**params, **{f"i{n}": v for n, v in enumerate(part)}})
        )
        if cursor.description is not None:
            rows.extend(cursor.fetchall())
    return rows
