"""Statements written once for the rows read or written most often, where compiling the ORM's
query costs more CPU than the database spends running it.

Reading: whole rows of joined models (a record by id with its module, an add-in token with
its session and user), loaded as model instances through the ORM's own converters and
`from_db`. Writing: `insert` and `save` of one model instance, with the values the ORM's
save would send (each field's `pre_save` and `get_db_prep_save`), for the rows a mail scan
writes for every email. They send no model signals: use them only for models that nothing
listens to (crm.access watches the models that grant access, never these). The statement's
text never changes, so the database driver prepares it once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, Model
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

    def all(self, sql: str, params: Sequence[Any]) -> list[list[Any]]:
        """The instances of every row of the statement, row by row."""
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [self.load(row) for row in cursor.fetchall()]

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


def insert(instance: Model) -> None:
    """INSERT the new instance's row (every concrete field but an automatic primary key) and
    set its primary key, as `instance.save(force_insert=True)` would, without signals."""
    sql, fields = _insert_statement(type(instance))
    with connection.cursor() as cursor:
        cursor.execute(sql, _values(instance, fields, add=True))
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias


def save(instance: Model) -> None:
    """UPDATE every concrete field of the instance's row, as `instance.save()` does for a row
    that exists, without signals."""
    sql, fields = _update_statement(type(instance))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_values(instance, fields, add=False), instance.pk])


def _values(instance: Model, fields: tuple[Field, ...], *, add: bool) -> list[Any]:
    return [f.get_db_prep_save(f.pre_save(instance, add), connection) for f in fields]


@functools.cache
def _insert_statement(model: type[Model]) -> tuple[str, tuple[Field, ...]]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if f is not meta.auto_field)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    pk = quote(meta.pk.column)
    sql = f"INSERT INTO {table(model)} ({columns}) VALUES ({marks}) RETURNING {pk}"  # noqa: S608
    return sql, fields


@functools.cache
def _update_statement(model: type[Model]) -> tuple[str, tuple[Field, ...]]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if not f.primary_key)
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    sql = f"UPDATE {table(model)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    return sql, fields
