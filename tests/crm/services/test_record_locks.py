"""A record being updated holds up only other updates of that record: not new records of its
module (their numbers), nor comments, links and changes written about it elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections, transaction

from crm.models import Comment, Module, Record
from crm.services import records
from tests.conftest import Org
from tests.factories import make_record

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def held(org: Org) -> Iterator[Record]:
    """A Ticket updated in another connection's open transaction, until the test ends."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's (set DATABASE_URL)")
    ticket = make_record("Tickets", org.alice, title="Printer on fire", status="Open")
    locked, finish = threading.Event(), threading.Event()

    def update() -> None:
        try:
            with transaction.atomic():
                records.update(actor=org.alice, record=ticket, data={"status": "Closed"})
                locked.set()
                finish.wait(timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=update)
    thread.start()
    assert locked.wait(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '2s'")  # a wait fails the test instead of hanging it
    try:
        yield ticket
    finally:
        finish.set()
        thread.join(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def test_a_new_record_of_the_module_is_numbered_meanwhile(org: Org, held: Record) -> None:
    other = records.create(
        actor=org.alice,
        module=Module.objects.get(name="Tickets"),
        data={"title": "Paper jam", "status": "Open"},
    )
    assert other.number != held.number


def test_a_comment_on_the_record_is_written_meanwhile(org: Org, held: Record) -> None:
    records.add_comment(actor=org.alice, record=held, body="Still burning")
    assert Comment.objects.filter(record=held, body="Still burning").exists()
