"""The scan task: "Scan now" in-process (embedded default) and on real Celery workers.

Expected figures come from what each test delivers to its Dovecot accounts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from crm.exceptions import Forbidden, Invalid
from crm.models import Message, Record
from mailconverter import scanner, services, tasks
from mailconverter.models import LedgerEntry, Mailbox, MailboxLease, ScanRun
from tests.conftest import Org
from tests.mailconverter.celery_worker import real_celery
from tests.mailconverter.conftest import Account, Dovecot
from tests.mailconverter.helpers import mail
from tests.mailconverter.test_scanner import make_mailbox

pytestmark = pytest.mark.imap  # every test scans, or makes its mailbox on, the private Dovecot


def emails(count: int, tag: str = "m") -> list[bytes]:
    return [
        mail("customer_question.eml").replace(b"question-1@", f"{tag}{i}@".encode())
        for i in range(count)
    ]


def tickets() -> int:
    return Record.objects.filter(module__name="Tickets", deleted_at=None).count()


def wait_for(check: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


# --- the embedded default: tasks run in-process ------------------------------------------------


@pytest.mark.django_db
def test_scan_now_without_redis_scans_in_process_and_leaves_a_finished_run(
    account: Account, org: Org, django_capture_on_commit_callbacks: Any
) -> None:
    for raw in emails(2):
        account.deliver(raw)
    mailbox = make_mailbox(account, org.admin)

    with django_capture_on_commit_callbacks(execute=True):
        run = services.scan_now(actor=org.admin, mailbox=mailbox)
    assert run.status == ScanRun.Status.QUEUED  # as the page first shows it

    shown = services.run_status(run)
    assert shown["finished"] is True
    assert (shown["status"], shown["label"]) == ("ok", "Finished")
    assert shown["counts"] == {"created": 2}
    assert (shown["folder"], shown["done"], shown["total"]) == ("INBOX", 2, 2)
    assert shown["finished_at"] is not None
    assert tickets() == 2
    assert ScanRun.objects.filter(mailbox=mailbox).count() == 1


@pytest.mark.django_db
def test_pressing_scan_now_twice_queues_one_scan(
    account: Account, org: Org, django_capture_on_commit_callbacks: Any
) -> None:
    mailbox = make_mailbox(account, org.admin)
    with django_capture_on_commit_callbacks() as sent:
        first = services.scan_now(actor=org.admin, mailbox=mailbox)
    with django_capture_on_commit_callbacks() as sent_again:
        second = services.scan_now(actor=org.admin, mailbox=mailbox)

    assert second.pk == first.pk
    assert len(sent) == 1
    assert sent_again == []
    assert services.run_status(second)["finished"] is False


@pytest.mark.django_db
def test_a_queued_run_that_never_started_is_closed_and_a_new_one_queued(
    account: Account, org: Org, django_capture_on_commit_callbacks: Any
) -> None:
    mailbox = make_mailbox(account, org.admin)
    lost = ScanRun.objects.create(
        mailbox=mailbox,
        started_at=timezone.now() - timedelta(hours=2),
        status=ScanRun.Status.QUEUED,
    )
    running_without_lease = ScanRun.objects.create(
        mailbox=mailbox, started_at=timezone.now(), status=ScanRun.Status.RUNNING
    )
    with django_capture_on_commit_callbacks() as sent:
        run = services.scan_now(actor=org.admin, mailbox=mailbox)

    assert run.pk not in (lost.pk, running_without_lease.pk)
    assert len(sent) == 1
    for old in (lost, running_without_lease):
        old.refresh_from_db()
        assert old.status == ScanRun.Status.FAILED
        assert "worker stopped" in old.error


@pytest.mark.django_db
def test_only_administrators_scan_now_and_only_enabled_mailboxes(
    account: Account, org: Org
) -> None:
    mailbox = make_mailbox(account, org.admin)
    with pytest.raises(Forbidden):
        services.scan_now(actor=org.alice, mailbox=mailbox)
    mailbox.enabled = False
    mailbox.save()
    with pytest.raises(Invalid):
        services.scan_now(actor=org.admin, mailbox=mailbox)
    assert not ScanRun.objects.exists()


@pytest.mark.django_db
def test_the_task_for_a_deleted_or_disabled_mailbox_ends_and_closes_its_run(
    account: Account, org: Org
) -> None:
    mailbox = make_mailbox(account, org.admin, enabled=False)
    run = ScanRun.objects.create(
        mailbox=mailbox, started_at=timezone.now(), status=ScanRun.Status.QUEUED
    )

    tasks.scan_mailbox(mailbox.pk, run.pk)
    tasks.scan_mailbox(mailbox.pk + 1000)  # gone: logged, nothing else

    run.refresh_from_db()
    assert run.status == ScanRun.Status.FAILED
    assert run.error == "The mailbox is disabled."
    assert ScanRun.objects.count() == 1


@pytest.mark.django_db
def test_a_task_delivered_twice_does_not_scan_its_finished_run_again(
    account: Account, org: Org
) -> None:
    account.deliver(emails(1)[0])
    mailbox = make_mailbox(account, org.admin)
    run = ScanRun.objects.create(
        mailbox=mailbox, started_at=timezone.now(), status=ScanRun.Status.QUEUED
    )
    tasks.scan_mailbox(mailbox.pk, run.pk)
    account.deliver(emails(1, tag="later")[0])

    tasks.scan_mailbox(mailbox.pk, run.pk)  # the broker's redelivery of the same task

    run.refresh_from_db()
    assert run.counts == {"created": 1}
    assert LedgerEntry.objects.count() == 1
    assert ScanRun.objects.count() == 1


@pytest.mark.django_db
def test_a_task_delivered_again_while_its_scan_runs_leaves_that_run_alone(
    account: Account, org: Org
) -> None:
    mailbox = make_mailbox(account, org.admin)
    run = ScanRun.objects.create(
        mailbox=mailbox, started_at=timezone.now(), status=ScanRun.Status.RUNNING
    )
    MailboxLease.objects.create(
        mailbox=mailbox,
        token="held-by-the-first-delivery",
        holder="another worker",
        expires_at=timezone.now() + timedelta(minutes=5),
    )

    tasks.scan_mailbox(mailbox.pk, run.pk)

    run.refresh_from_db()
    assert run.status == ScanRun.Status.RUNNING  # still the first delivery's, still going
    second = ScanRun.objects.exclude(pk=run.pk).get()
    assert second.status == ScanRun.Status.BUSY


# --- real Redis, real workers ------------------------------------------------------------------

celery_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)
WORKER_ENV = {"CONVERTER_SENDER_TICKET_LIMIT": "1000"}  # every test email has one sender


@pytest.fixture
def _postgres(settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a worker process shares the test database only on PostgreSQL")
    settings.CONVERTER_SENDER_TICKET_LIMIT = 1000


@pytest.mark.celery
@celery_db
@pytest.mark.usefixtures("_postgres")
def test_scan_now_is_queued_and_a_worker_scans_the_mailbox(
    account: Account, org: Org, tmp_path: Path
) -> None:
    for raw in emails(3):
        account.deliver(raw)
    mailbox = make_mailbox(account, org.admin)

    with real_celery(tmp_path, **WORKER_ENV) as [worker]:
        run = services.scan_now(actor=org.admin, mailbox=mailbox)
        assert services.run_status(run)["status"] in ("queued", "running", "ok")
        wait_for(lambda: services.run_status(run)["finished"], what=worker.output())

    shown = services.run_status(run)
    assert shown["status"] == "ok", shown["error"]
    assert shown["counts"] == {"created": 3}
    assert (shown["folder"], shown["done"], shown["total"]) == ("INBOX", 3, 3)
    assert tickets() == 3
    assert all(flags == {b"\\Seen"} for flags in account.flags().values())


@pytest.mark.celery
@celery_db
@pytest.mark.usefixtures("_postgres")
def test_two_workers_with_every_scan_queued_twice_convert_each_email_once(
    account: Account, dovecot: Dovecot, org: Org, tmp_path: Path
) -> None:
    # Three mailboxes receive the same six emails: six tickets in all, whoever scans first.
    accounts = [account, dovecot.add_account(), dovecot.add_account()]
    shared = emails(6)
    mailboxes = []
    for n, acc in enumerate(accounts):
        for raw in shared:
            acc.deliver(raw)
        mailboxes.append(make_mailbox(acc, org.admin, name=f"box {n}"))

    with real_celery(tmp_path, count=2, **WORKER_ENV) as workers:
        queued = []
        for mailbox in mailboxes:
            first = services.scan_now(actor=org.admin, mailbox=mailbox)
            again = services.scan_now(actor=org.admin, mailbox=mailbox)
            assert again.pk == first.pk  # pressed twice: the queued run comes back
            queued.append(first)
            # Beat's entry fires too, twice (two beat processes, or a late one).
            tasks.scan_mailbox.delay(mailbox.pk)
            tasks.scan_mailbox.delay(mailbox.pk)

        def all_done() -> bool:
            runs = ScanRun.objects.filter(mailbox__in=mailboxes)
            return runs.count() == 9 and not runs.filter(status__in=["queued", "running"])

        wait_for(all_done, what="\n".join(w.output() for w in workers))

    assert tickets() == 6
    assert Message.objects.count() == 6
    assert LedgerEntry.objects.count() == 18
    assert LedgerEntry.objects.filter(outcome="created").count() == 6
    assert LedgerEntry.objects.filter(outcome="duplicate").count() == 12
    for mailbox in mailboxes:
        runs = ScanRun.objects.filter(mailbox=mailbox)
        assert set(runs.values_list("status", flat=True)) <= {"ok", "busy"}
        # Each email of the mailbox was processed by exactly one of its runs.
        assert sum(r.processed for r in runs) == 6
    assert {services.run_status(r)["status"] for r in queued} <= {"ok", "busy"}


@pytest.mark.celery
@celery_db
@pytest.mark.usefixtures("_postgres")
def test_a_worker_told_to_stop_finishes_the_message_at_hand_and_loses_nothing(
    account: Account, org: Org, tmp_path: Path
) -> None:
    delivered = 150
    for raw in emails(delivered):
        account.deliver(raw)
    mailbox = make_mailbox(account, org.admin)

    # 150 new messages: the task's process forks conversion workers, which a warm shutdown
    # leaves to the scan to stop.
    with real_celery(tmp_path, **WORKER_ENV, CONVERTER_WORKERS="2") as [worker]:
        run = services.scan_now(actor=org.admin, mailbox=mailbox)
        # The page sees the scan under way: its folder and how many messages it holds.
        wait_for(lambda: services.run_status(run)["total"] == delivered)
        shown = services.run_status(run)
        assert (shown["status"], shown["folder"], shown["finished"]) == ("running", "INBOX", False)
        wait_for(lambda: LedgerEntry.objects.filter(mailbox=mailbox).count() >= 3)
        assert worker.terminate() == 0

    run.refresh_from_db()
    assert run.status == ScanRun.Status.STOPPED, worker.output()
    assert "2 conversion workers started" in worker.output()
    assert 3 <= run.processed < delivered
    assert LedgerEntry.objects.count() == run.processed == tickets()
    seen = sum(1 for flags in account.flags().values() if b"\\Seen" in flags)
    assert seen == run.processed  # flagged exactly what committed

    rest = scanner.scan(Mailbox.objects.get(pk=mailbox.pk))
    assert rest.counts == {"created": delivered - run.processed}
    assert tickets() == delivered
