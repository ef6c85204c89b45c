"""The database holds every index and constraint the models declare.

A migration that alters a field can drop indexes it was not asked to: the ledger's one acting
row per email was lost that way once (mailconverter 0006, restored by 0007), and with it the
guard against converting one email twice in two mailboxes at the same moment.
"""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from mailconverter.models import Folder, LedgerEntry, Mailbox
from tests.conftest import Org

pytestmark = pytest.mark.django_db

restore = importlib.import_module("mailconverter.migrations.0007_restore_acted_once").restore


def missing_from_the_database() -> list[str]:
    missing = []
    with connection.cursor() as cursor:
        for model in apps.get_models():
            meta = model._meta
            if not meta.managed or meta.proxy:
                continue
            present = connection.introspection.get_constraints(cursor, meta.db_table)
            declared = [*meta.constraints, *meta.indexes]
            missing += [f"{meta.label}: {d.name}" for d in declared if d.name not in present]
    return missing


def test_every_declared_index_and_constraint_exists() -> None:
    assert missing_from_the_database() == []


def mailbox(name: str, org: Org) -> Mailbox:
    box = Mailbox.objects.create(name=name, host="imap.example.com", username=name, owner=org.admin)
    Folder.objects.create(mailbox=box, name="INBOX", selected=True)
    return box


def test_the_repair_keeps_the_first_acting_row_of_an_email_converted_twice(org: Org) -> None:
    if connection.vendor != "postgresql":
        # The index was lost on PostgreSQL only; SQLite's schema editor cannot drop it inside
        # the test's transaction to set up the damaged state.
        pytest.skip("the lost index and its repair are PostgreSQL's (set DATABASE_URL)")
    acted_once = next(c for c in LedgerEntry._meta.constraints if "acted" in c.name)
    with connection.schema_editor() as editor:
        editor.remove_constraint(LedgerEntry, acted_once)  # as 0006 left it
    mailboxes = [mailbox("support", org), mailbox("sales", org)]
    rows = [
        LedgerEntry.objects.create(
            mailbox=mailbox,
            folder=mailbox.folders.get(),
            uidvalidity=1,
            uid=uid,
            identity=identity,
            outcome="created",
            acted=True,
            created_at=timezone.now(),
            processed_at=timezone.now(),
        )
        for mailbox, uid, identity in [
            (mailboxes[0], 4, "a" * 64),
            (mailboxes[1], 2, "a" * 64),  # the double
            (mailboxes[1], 3, "b" * 64),
        ]
    ]

    with connection.schema_editor() as editor:
        restore(apps, editor)

    assert missing_from_the_database() == []
    acted = set(LedgerEntry.objects.filter(acted=True).values_list("pk", flat=True))
    assert acted == {rows[0].pk, rows[2].pk}
    double = LedgerEntry.objects.get(pk=rows[1].pk)
    assert double.outcome == "created"  # its ticket stays, for an administrator to merge
    assert "beside support/INBOX UID 4" in double.reason
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.filter(pk=rows[1].pk).update(acted=True)
