"""Whole rows of joined models from a statement written once, loaded as the ORM loads them.

For the few look-ups made on nearly every request (a record by id with its module, an add-in
token with its session and user): compiling the ORM query costs more CPU than PostgreSQL
spends running it. The statement's text never changes, so the database driver prepares it
once; the rows come back as model instances through the ORM's own converters and `from_db`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.expressions import Col


@dataclass(frozen=True)
class _Column:
    attname: str
    col: Col
    converters: tuple[Any, ...]


@dataclass(frozen=True)
class Rows:
    """The select list of several models, each under its alias, and how to load a row."""

    columns: str  # `t."id", t."digest", ..., s."id", ...`: every concrete field, in order
    layout: tuple[tuple[type[Model], list[str], tuple[_Column, ...]], ...]  # attnames too

    def first(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """The instances of the statement's first row, or None without a row."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return None if row is None else self.load(row)

    def load(self, row: Sequence[Any]) -> list[Any]:
        """One instance per model, in the order given to `rows_of`."""
        values = iter(row)
        return [
            model.from_db(
                connection.alias, attnames, [_converted(next(values), c) for c in columns]
            )
            for model, attnames, columns in self.layout
        ]


def rows_of(*aliased: tuple[type[Model], str]) -> Rows:
    """The columns of these models (names from their metadata only) and their converters."""
    quote = connection.ops.quote_name
    names: list[str] = []
    layout = []
    for model, alias in aliased:
        columns = []
        for field in model._meta.concrete_fields:
            col = Col(alias, field)
            converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            columns.append(_Column(field.attname, col, tuple(converters)))
            names.append(f"{alias}.{quote(field.column)}")
        layout.append((model, [c.attname for c in columns], tuple(columns)))
    return Rows(", ".join(names), tuple(layout))


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _converted(value: Any, column: _Column) -> Any:
    for converter in column.converters:
        value = converter(value, column.col, connection)
    return value
