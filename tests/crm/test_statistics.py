"""The planner's statistics of a growing table: analyzed once it has grown as much again as it
had at its last ANALYZE, left alone before (crm.statistics), on PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection

from crm import statistics
from crm.models import Document, Message, Record
from tests.conftest import Org
from tests.factories import make_record

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture(autouse=True)
def _postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's (set DATABASE_URL)")


def analyzed(table: str) -> int:
    """How many times the table has been analyzed, once this connection's committed changes
    are counted (they reach the shared counters when the connection goes idle)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = %s::regclass", [table]
        )
        return cursor.fetchone()[0]


def analyze_now(table: str) -> int:
    analyzed(table)  # changes counted after the ANALYZE would count as made since
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    return analyzed(table)


def companies(org: Org, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        make_record("Companies", org.alice, name=f"Company {n}")


def test_a_table_grown_past_the_threshold_is_analyzed_once(org: Org) -> None:
    before = analyze_now("crm_record")
    companies(org, 25)
    analyzed("crm_record")  # the inserts counted

    assert statistics.refresh([Record, Message], at_least=20) == ["crm_record"]
    assert analyzed("crm_record") == before + 1
    assert statistics.refresh([Record, Message], at_least=20) == []
    assert analyzed("crm_record") == before + 1


def test_fewer_changes_than_the_threshold_leave_the_table_alone(org: Org) -> None:
    before = analyze_now("crm_record")
    companies(org, 5)
    analyzed("crm_record")

    assert statistics.due([Record], at_least=20) == []
    assert statistics.refresh([Record], at_least=20) == []
    assert analyzed("crm_record") == before


def test_a_big_table_waits_until_it_has_grown_as_much_again(org: Org) -> None:
    """After an ANALYZE of 40 rows, 30 more are not enough; 45 more are."""
    companies(org, 40)
    before = analyze_now("crm_record")
    rows = Record.objects.count()
    companies(org, rows - 10, start=40)
    analyzed("crm_record")
    assert statistics.due([Record], at_least=5) == []

    companies(org, 15, start=1000)
    analyzed("crm_record")
    assert statistics.refresh([Record, Document], at_least=5) == ["crm_record"]
    assert analyzed("crm_record") == before + 1
