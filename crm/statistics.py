"""The planner's statistics of tables that a bulk job grows, kept current as it goes.

PostgreSQL plans a query from statistics that ANALYZE gathers, and autovacuum gathers them only
if it is on and only once a minute at most. A table that has never been analyzed is planned
blind: a look-up of a reply's In-Reply-To in stored emails then reads every stored email (the
default guess that `deleted_at IS NULL` keeps half a percent of the rows makes a partial index
look tiny), and the plans a connection has cached stay blind for as long as it lives. A first
scan of a mailbox of thousands of emails into a new CRM is exactly that case, and so is every
scan on a server where autovacuum is off.

`refresh(models)` analyzes the tables among `models` that have had at least as many rows
inserted, updated or deleted since they were last analyzed as they had then (and at least
`at_least`): a table is analyzed a few times as it grows from empty to thousands of rows, and
practically never once it is big, which stays autovacuum's work. ANALYZE takes a lock that
does not block reads or writes, and it makes every connection plan its cached statements on
those tables again. Only on PostgreSQL; elsewhere it does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Model

AT_LEAST = 500  # changes since the last ANALYZE before a table counts as grown

_DUE = """
SELECT c.relname
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = ANY(%s::regclass[])
  AND s.n_mod_since_analyze >= GREATEST(%s, c.reltuples)
ORDER BY c.relname
"""


def due(models: Iterable[type[Model]], *, at_least: int | None = None) -> list[str]:
    """The tables among `models` that have grown enough since their last ANALYZE to need one."""
    if connection.vendor != "postgresql":
        return []
    tables = sorted({model._meta.db_table for model in models})
    with connection.cursor() as cursor:
        cursor.execute(_DUE, [tables, AT_LEAST if at_least is None else at_least])
        return [name for (name,) in cursor.fetchall()]


def refresh(models: Iterable[type[Model]], *, at_least: int | None = None) -> list[str]:
    """ANALYZE the tables among `models` that are due (see the module); the tables analyzed."""
    tables = due(models, at_least=at_least)
    if tables:
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(quote(t) for t in tables)}")
    return tables
