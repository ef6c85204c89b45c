"""Statements written once: a row written through them reads back as the ORM wrote it."""

from __future__ import annotations

import pytest
from django.utils import timezone

from crm import statements
from crm.models import ChangeLog, Comment
from tests.conftest import Org
from tests.factories import make_record

pytestmark = pytest.mark.django_db


def test_an_inserted_row_reads_back_whole_with_its_new_id(org: Org) -> None:
    record = make_record("Companies", org.alice, name="Acme")
    at = timezone.now()
    entry = ChangeLog(
        record=record,
        module_id=record.module_id,
        record_number=record.number,
        actor=org.alice,
        at=at,
        action=ChangeLog.Action.UPDATE,
        changes={"name": ["Acme", "Acme Ltd"], "note": [None, "ünïcode ✓"]},
    )
    statements.insert(entry)
    assert entry.pk is not None
    assert not entry._state.adding
    stored = ChangeLog.objects.get(pk=entry.pk)
    assert (stored.record_id, stored.actor_id, stored.at) == (record.pk, org.alice.pk, at)
    assert stored.changes == {"name": ["Acme", "Acme Ltd"], "note": [None, "ünïcode ✓"]}


def test_a_saved_row_has_every_field_written(org: Org) -> None:
    record = make_record("Companies", org.alice, name="Acme")
    comment = Comment(record=record, author=org.alice, body="First", created_at=timezone.now())
    statements.insert(comment)
    other = Comment(record=record, author=org.alice, body="Other", created_at=timezone.now())
    statements.insert(other)
    comment.body, comment.author, comment.author_address = "Edited", None, "jane@customer.example"
    statements.save(comment)
    comment.refresh_from_db()
    assert (comment.body, comment.author_id, comment.author_address) == (
        "Edited",
        None,
        "jane@customer.example",
    )
    assert Comment.objects.get(pk=other.pk).body == "Other"  # only its own row
