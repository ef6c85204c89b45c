"""Two workers at once, on PostgreSQL: one scan per mailbox, one ticket per email."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from crm.models import Message, Record
from mailconverter import scanner
from mailconverter.models import LedgerEntry, Mailbox, ScanRun
from tests.conftest import Org
from tests.mailconverter.conftest import Account, Dovecot
from tests.mailconverter.helpers import mail
from tests.mailconverter.test_scanner import make_mailbox

pytestmark = [
    pytest.mark.imap,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

EMAILS = 12


def _emails() -> list[bytes]:
    return [
        mail("customer_question.eml").replace(b"question-1@", f"c{i}@".encode())
        for i in range(EMAILS)
    ]


def _in_threads(*targets: Callable[[], ScanRun]) -> list[ScanRun]:
    results: list[ScanRun] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def run(target: Callable[[], ScanRun]) -> None:
        try:
            start.wait()
            results.append(target())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def _scan_two_mailboxes_at_once(account: Account, other: Account, org: Org) -> list[ScanRun]:
    first = make_mailbox(account, org.admin)
    second = make_mailbox(other, org.admin, name="sales")
    return _in_threads(
        lambda: scanner.scan(Mailbox.objects.get(pk=first.pk)),
        lambda: scanner.scan(Mailbox.objects.get(pk=second.pk)),
    )


@pytest.fixture
def _postgres_only(settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrency needs PostgreSQL (set DATABASE_URL)")
    settings.CONVERTER_SENDER_TICKET_LIMIT = 100  # every test email comes from one sender


@pytest.mark.usefixtures("_postgres_only")
def test_two_workers_on_one_mailbox_never_overlap_and_never_double(
    account: Account, org: Org
) -> None:
    for raw in _emails():
        account.deliver(raw)
    mailbox = make_mailbox(account, org.admin)
    runs = _in_threads(
        lambda: scanner.scan(Mailbox.objects.get(pk=mailbox.pk)),
        lambda: scanner.scan(Mailbox.objects.get(pk=mailbox.pk)),
    )
    statuses = sorted(r.status for r in runs)
    assert statuses in (["busy", "ok"], ["ok", "ok"])  # the second may start after the first
    assert Record.objects.filter(module__name="Tickets").count() == EMAILS
    assert LedgerEntry.objects.count() == EMAILS
    assert all(f == {b"\\Seen"} for f in account.flags().values())


@pytest.mark.usefixtures("_postgres_only")
def test_the_same_mail_in_two_mailboxes_scanned_at_once_makes_one_ticket_each(
    account: Account, dovecot: Dovecot, org: Org
) -> None:
    other = dovecot.add_account()
    emails = _emails()
    # Opposite orders, so the two scans meet in the middle and race for the same emails.
    for raw in emails:
        account.deliver(raw)
    for raw in reversed(emails):
        other.deliver(raw)
    runs = _scan_two_mailboxes_at_once(account, other, org)
    assert all(r.status == "ok" for r in runs), [r.error for r in runs]
    counts = [r.counts for r in runs]
    assert sum(c.get("created", 0) for c in counts) == EMAILS
    assert sum(c.get("duplicate", 0) for c in counts) == EMAILS
    assert Record.objects.filter(module__name="Tickets").count() == EMAILS
    assert Message.objects.count() == EMAILS


@pytest.mark.usefixtures("_postgres_only")
def test_two_mailboxes_scanned_at_once_keep_a_senders_ticket_limit(
    account: Account, dovecot: Dovecot, org: Org, settings: Any
) -> None:
    settings.CONVERTER_SENDER_TICKET_LIMIT = 3
    other = dovecot.add_account()
    for i, raw in enumerate(_emails()):  # one sender, twelve different emails
        (account if i % 2 else other).deliver(raw)
    runs = _scan_two_mailboxes_at_once(account, other, org)
    assert all(r.status == "ok" for r in runs), [r.error for r in runs]
    assert Record.objects.filter(module__name="Tickets").count() == 3
    refused = LedgerEntry.objects.filter(outcome="unmatched", reason__contains="sender limit")
    assert refused.count() == EMAILS - 3


def _second_waits_for_first(first: Callable[[], None], second: Callable[[], None]) -> bool:
    """Run `first` in a transaction of another connection and hold its commit; meanwhile run
    `second` in a third. True if `second` was still waiting 1.5 s later; both have ended on
    return, `first` committed."""
    started, commit = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                first()
                started.set()
                commit.wait(timeout=30)
        finally:
            connections.close_all()

    def run_second() -> None:
        try:
            second()
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert started.wait(timeout=30)
    other = threading.Thread(target=run_second)
    other.start()
    other.join(timeout=1.5)
    waited = other.is_alive()  # the first is neither committed nor rolled back
    commit.set()
    holder.join(timeout=30)
    other.join(timeout=30)
    return waited


@pytest.mark.usefixtures("_postgres_only")
def test_an_email_another_mailbox_is_converting_waits_for_it_then_is_a_duplicate(
    account: Account, dovecot: Dovecot, org: Org
) -> None:
    raw = mail("customer_question.eml")
    first = make_mailbox(account, org.admin)
    second = make_mailbox(dovecot.add_account(), org.admin, name="sales")
    second_done: list[LedgerEntry] = []

    def convert_in_first() -> None:
        entry = scanner.process(first, first.folders.get(), 7, 1, raw)
        assert entry.outcome == "created", entry.error

    def convert_in_second() -> None:
        second_done.append(scanner.process(second, second.folders.get(), 9, 1, raw))

    waited = _second_waits_for_first(convert_in_first, convert_in_second)

    assert waited
    [entry] = second_done
    assert (entry.outcome, entry.reason) == ("duplicate", "already converted from support/INBOX")
    assert Record.objects.filter(module__name="Tickets").count() == 1
    assert Message.objects.count() == 1


@pytest.mark.usefixtures("_postgres_only")
def test_a_twin_claimed_by_an_unfinished_conversion_cannot_be_claimed_again(
    account: Account, dovecot: Dovecot, org: Org
) -> None:
    # The ledger's one acting row per email: whoever claims the email second waits for the
    # first claim's transaction, and loses once it commits, however late it stores the email.
    first = make_mailbox(account, org.admin)
    second = make_mailbox(dovecot.add_account(), org.admin, name="sales")
    twins = [
        LedgerEntry.objects.create(
            mailbox=mailbox,
            folder=mailbox.folders.get(),
            uidvalidity=1,
            uid=1,
            identity="e" * 64,
            outcome="failed",
            created_at=timezone.now(),
        )
        for mailbox in (first, second)
    ]
    answers: list[bool | BaseException] = []

    def claim_first() -> None:
        assert scanner._claim(twins[0])

    def claim_second() -> None:
        try:
            with transaction.atomic():
                answers.append(scanner._claim(twins[1]))
        except IntegrityError as exc:
            answers.append(exc)

    waited = _second_waits_for_first(claim_first, claim_second)

    assert waited, answers
    [answer] = answers
    assert isinstance(answer, IntegrityError)
    with transaction.atomic():
        assert not scanner._claim(twins[1])  # run again, it finds the twin: a duplicate
    assert list(LedgerEntry.objects.filter(acted=True)) == [twins[0]]
