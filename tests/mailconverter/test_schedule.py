"""One periodic scan per enabled mailbox, kept in step through the mailbox services."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from celery.signals import beat_init
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from crm.celery import app as celery_app
from crm.exceptions import Forbidden, Invalid
from mailconverter import schedule, services, tasks
from mailconverter.models import Folder, LedgerEntry, Mailbox
from tests.conftest import Org

pytestmark = pytest.mark.django_db


def new_mailbox(org: Org, **fields: object) -> Mailbox:
    values: dict[str, object] = {
        "name": "support",
        "host": "imap.example.com",
        "port": 993,
        "username": "support@example.com",
        "owner": org.admin,
        "interval_minutes": 5,
    }
    values.update(fields)
    return services.save_mailbox(actor=org.admin, mailbox=Mailbox(**values), password="secret")


def entry(mailbox: Mailbox) -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"mailconverter: scan {mailbox.pk}")


def test_saving_a_new_mailbox_schedules_its_scan_at_its_interval(org: Org) -> None:
    mailbox = new_mailbox(org, interval_minutes=7)

    task = entry(mailbox)
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (7, "minutes")
    assert json.loads(task.args) == [mailbox.pk]
    # The name beat sends is the real task, which takes the mailbox's id.
    assert celery_app.tasks[task.task] is tasks.scan_mailbox._get_current_object()
    assert PeriodicTask.objects.filter(name__startswith="mailconverter:").count() == 1


def test_changing_the_interval_moves_the_same_entry(org: Org) -> None:
    mailbox = new_mailbox(org)
    before = entry(mailbox).pk

    mailbox.interval_minutes = 15
    services.save_mailbox(actor=org.admin, mailbox=mailbox)

    task = entry(mailbox)
    assert task.pk == before
    assert task.interval.every == 15


def test_disabling_a_mailbox_disables_its_scan_and_enabling_resumes_it(org: Org) -> None:
    mailbox = new_mailbox(org)

    mailbox.enabled = False
    services.save_mailbox(actor=org.admin, mailbox=mailbox)
    assert not entry(mailbox).enabled

    mailbox.enabled = True
    services.save_mailbox(actor=org.admin, mailbox=mailbox)
    assert entry(mailbox).enabled


def test_a_new_disabled_mailbox_gets_no_scan(org: Org) -> None:
    mailbox = new_mailbox(org, enabled=False)
    assert not PeriodicTask.objects.filter(name=f"mailconverter: scan {mailbox.pk}").exists()


def test_deleting_a_mailbox_removes_its_scan(org: Org) -> None:
    mailbox = new_mailbox(org)
    other = new_mailbox(org, name="sales")
    pk = mailbox.pk

    services.delete_mailbox(actor=org.admin, mailbox=mailbox)

    assert not Mailbox.objects.filter(pk=pk).exists()
    assert not PeriodicTask.objects.filter(name=f"mailconverter: scan {pk}").exists()
    assert entry(other).enabled


def test_sync_all_repairs_a_missing_an_edited_and_an_orphaned_entry(org: Org) -> None:
    lost = new_mailbox(org, name="lost")
    edited = new_mailbox(org, name="edited", interval_minutes=10)
    entry(lost).delete()
    edited_entry = entry(edited)
    edited_entry.enabled = False
    edited_entry.args = "[]"
    edited_entry.save()
    PeriodicTask.objects.create(
        name="mailconverter: scan 999999", task=schedule.TASK, interval=edited_entry.interval
    )

    assert schedule.sync_all() == 2

    assert entry(lost).enabled
    repaired = entry(edited)
    assert repaired.enabled
    assert json.loads(repaired.args) == [edited.pk]
    assert repaired.interval.every == 10
    assert not PeriodicTask.objects.filter(name="mailconverter: scan 999999").exists()


def test_beat_starting_schedules_a_mailbox_that_bypassed_the_services(org: Org) -> None:
    mailbox = Mailbox.objects.create(
        name="restored", host="imap.example.com", username="u@example.com", owner=org.admin
    )
    assert not PeriodicTask.objects.filter(name__startswith="mailconverter:").exists()

    beat_init.send(sender=None)

    assert entry(mailbox).enabled


# Beat drops a connection found inside a transaction (close_old_connections): it reads the
# schedule as its own process would, in autocommit.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_beat_loads_the_mailbox_entry_from_the_database(org: Org) -> None:
    mailbox = new_mailbox(org, interval_minutes=3)
    disabled = new_mailbox(org, name="off")
    disabled.enabled = False
    services.save_mailbox(actor=org.admin, mailbox=disabled)

    beat = DatabaseScheduler(app=celery_app)
    loaded = beat.schedule

    scheduled = loaded[f"mailconverter: scan {mailbox.pk}"]
    assert scheduled.task == "mailconverter.tasks.scan_mailbox"
    assert celery_app.tasks[scheduled.task] is tasks.scan_mailbox._get_current_object()
    assert list(scheduled.args) == [mailbox.pk]
    assert scheduled.schedule.run_every == timedelta(minutes=3)
    assert f"mailconverter: scan {disabled.pk}" not in loaded


def test_only_administrators_change_or_delete_mailboxes(org: Org) -> None:
    mailbox = new_mailbox(org)
    mailbox.interval_minutes = 60
    with pytest.raises(Forbidden):
        services.save_mailbox(actor=org.bob, mailbox=mailbox)
    with pytest.raises(Forbidden):
        services.delete_mailbox(actor=org.alice, mailbox=mailbox)
    assert Mailbox.objects.get(pk=mailbox.pk).interval_minutes == 5
    assert entry(mailbox).interval.every == 5


def test_a_mailbox_without_a_name_is_refused_naming_the_field(org: Org) -> None:
    with pytest.raises(Invalid) as refused:
        new_mailbox(org, name="")
    assert "name" in refused.value.fields
    assert not Mailbox.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="mailconverter:").exists()


def test_a_new_server_keeps_the_folders_the_ledger_and_the_password(org: Org) -> None:
    mailbox = new_mailbox(org)
    folder = Folder.objects.create(
        mailbox=mailbox, name="INBOX", selected=True, uidvalidity=7, last_uid=42
    )
    LedgerEntry.objects.create(
        mailbox=mailbox,
        folder=folder,
        uidvalidity=7,
        uid=42,
        identity="a" * 64,
        acted=True,
        outcome="created",
        created_at=timezone.now(),
    )

    mailbox.host, mailbox.username = "imap.new.example.com", "helpdesk@example.com"
    services.save_mailbox(actor=org.admin, mailbox=mailbox, password=None)

    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert stored.host == "imap.new.example.com"
    assert stored.password == "secret"
    assert Folder.objects.get(mailbox=mailbox).last_uid == 42
    assert LedgerEntry.objects.filter(mailbox=mailbox).count() == 1

    services.save_mailbox(actor=org.admin, mailbox=stored, password="changed")
    assert Mailbox.objects.get(pk=mailbox.pk).password == "changed"
