"""A scan converting in worker processes (mailconverter.workers), on PostgreSQL and Dovecot:
the same tickets, updates and leads as one process would make, and nothing lost or doubled
when a worker dies or the lease is taken over."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest
from django.db import connection, connections

from crm import statistics
from crm.models import Comment, MessageLink, Record
from crm.services import ingest
from mailconverter import actions, scanner, workers
from mailconverter.models import LedgerEntry, Mailbox, MailboxLease, Outcome, ScanRun
from mailconverter.workers import Job
from tests.conftest import Org
from tests.crm.test_statistics import analyzed
from tests.mailconverter.conftest import Account
from tests.mailconverter.test_scanner import make_mailbox, tickets

UPDATE_ELSE_CREATE_WITH_LEAD = [
    {"actions": [{"type": "update_ticket"}]},
    {"actions": [{"type": "create_ticket", "create_lead": True}]},
]

F = TypeVar("F", bound=Callable[..., None])


def scanning(test: F) -> F:
    """A test that scans with workers: Dovecot, PostgreSQL, and commits the workers see."""
    marks = (
        pytest.mark.imap,
        pytest.mark.postgres,
        pytest.mark.django_db(transaction=True, serialized_rollback=True),
    )
    for mark in marks:
        test = mark(test)
    return test


def email(sender: str, subject: str, message_id: str, reply_to: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Support <support@crm.test>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 30 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<{message_id}>"
    if reply_to:
        msg["In-Reply-To"] = msg["References"] = f"<{reply_to}>"
    msg.set_content(f"{subject}\n")
    return msg.as_bytes()


def questions(account: Account, count: int) -> dict[int, int]:
    """`count` questions from as many senders and companies; UID -> question number."""
    return {
        account.deliver(email(f"P{i} <p{i}@firm{i}.example>", f"Question {i}", f"q{i}@x")): i
        for i in range(count)
    }


@pytest.fixture
def in_workers(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Two workers from the first message on; the list holds each pool's size."""
    if connection.vendor != "postgresql":
        pytest.skip("conversion workers need PostgreSQL (set DATABASE_URL)")
    settings.CONVERTER_WORKERS, settings.CONVERTER_WORKERS_FROM = 2, 2
    settings.CONVERTER_SENDER_TICKET_LIMIT = 100
    pools: list[int] = []
    real = workers.Workers

    def counted(mailbox: int, token: str, count: int) -> workers.Workers:
        pools.append(count)
        return real(mailbox, token, count)

    monkeypatch.setattr(scanner, "Workers", counted)
    return pools


def kill_self_on(subject: str, parent: int) -> Any:
    """A `create_ticket` that kills the worker process converting `subject`."""

    def handler(action: Any, ctx: Any) -> Any:
        if ctx.message.subject == subject and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return actions.create_ticket(action, ctx)

    return handler


# --- what may run side by side -----------------------------------------------------------------


def job(uid: int, *conflicts: str) -> Job:
    return Job(1, 1, uid, b"", frozenset(conflicts))


def test_conflicting_jobs_wait_for_each_other_in_uid_order() -> None:
    waiting = [job(1, "address:a"), job(2, "address:a"), job(3, "address:b"), job(4, "id:x")]
    running = [job(0, "id:x")]
    # 1 is free; 2 waits behind it; 3 is free; 4 shares its id with the running job.
    assert workers._next(waiting, running).uid == 1  # type: ignore[union-attr]
    running.append(job(1, "address:a"))
    assert workers._next(waiting, running).uid == 3  # type: ignore[union-attr]
    running.append(job(3, "address:b"))
    assert workers._next(waiting, running) is None
    assert [j.uid for j in waiting] == [2, 4]
    # A job never overtakes an earlier waiting job it conflicts with.
    assert workers._next([job(5, "address:c"), job(6, "address:c")], []).uid == 5  # type: ignore[union-attr]
    assert (
        workers._next([job(7, "address:d", "id:y"), job(8, "id:y")], [job(9, "address:d")]) is None
    )


def test_what_two_messages_must_not_share() -> None:
    raw = (
        b"From: Anna <Anna@ACME.example>\r\nTo: Support <support@crm.test>, bob@gmail.com\r\n"
        b"Cc: =?utf-8?q?Carla_M=C3=BCller?= <carla@beta.example>\r\n"
        b"Message-ID: <m1@acme.example>\r\n"
        b"In-Reply-To: <m0@crm.test>\r\nReferences: <r0@crm.test>\r\n <m0@CRM.test>\r\n"
        b"X-Riferimento-Message-ID: <orig@pec.example>\r\n\r\nBody: <not@a.header>\r\n"
    )
    keys = scanner._conflicts(raw, frozenset({"support@crm.test"}))
    assert keys == {
        "id:m1@acme.example",
        "id:m0@crm.test",
        "id:r0@crm.test",
        "id:orig@pec.example",
        "address:anna@acme.example",
        "domain:acme.example",
        "address:bob@gmail.com",  # a free-mail domain is no company: no domain key
        "address:carla@beta.example",
        "domain:beta.example",
    }


# --- a scan in workers -------------------------------------------------------------------------


@scanning
@pytest.mark.parametrize("batch", [50, 3])
def test_workers_make_what_one_process_makes(
    account: Account, org: Org, in_workers: list[int], settings: Any, batch: int
) -> None:
    """Replies right behind their question, a second thread from one sender, a colleague's
    reply: in workers, each still updates its ticket and each sender gets one lead. In
    batches of 3, a reply and its question fall in different batches, which the workers
    convert side by side (the next batch is handed out before the last one is finished)."""
    settings.CONVERTER_FETCH_BATCH = batch
    expected_updates: dict[str, str] = {}  # reply's Message-ID -> question's
    for i in range(12):
        sender = f"Person {i} <person{i}@firm{i}.example>"
        account.deliver(email(sender, f"Question {i}", f"q{i}@firm{i}.example"))
        if i < 4:
            account.deliver(email(sender, f"Re: Question {i}", f"r{i}@x", f"q{i}@firm{i}.example"))
            expected_updates[f"r{i}@x"] = f"q{i}@firm{i}.example"
    account.deliver(email("Person 5 <person5@firm5.example>", "Another matter", "q5b@x"))
    account.deliver(
        email("Colleague <col@other.example>", "Re: Question 6", "c6@x", "q6@firm6.example")
    )
    expected_updates["c6@x"] = "q6@firm6.example"
    mailbox = make_mailbox(account, org.admin, rules=UPDATE_ELSE_CREATE_WITH_LEAD)

    run = scanner.scan(mailbox)

    assert in_workers == [2]
    assert run.status == ScanRun.Status.OK, run.error
    assert run.counts == {"created": 13, "updated": 5}
    assert len(tickets()) == 13
    leads = Record.objects.filter(module__name="Leads")
    assert sorted(lead.data["email"] for lead in leads) == sorted(
        [f"person{i}@firm{i}.example" for i in range(12)]
    )
    for reply, question in expected_updates.items():
        [ticket] = Record.objects.filter(
            module__name="Tickets", message_links__message__message_id=question
        )
        assert MessageLink.objects.filter(record=ticket, message__message_id=reply).exists()
        assert Comment.objects.filter(record=ticket).count() == 1
    assert all(f == {b"\\Seen"} for f in account.flags().values())


@scanning
def test_a_worker_killed_mid_message_loses_nothing_and_doubles_nothing(
    account: Account, org: Org, in_workers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = questions(account, 8)
    mailbox = make_mailbox(account, org.admin)
    handler = kill_self_on("Question 3", parent=os.getpid())
    monkeypatch.setitem(actions._HANDLERS, "create_ticket", handler)

    cut = scanner.scan(mailbox)

    assert in_workers == [2]
    assert cut.status == ScanRun.Status.FAILED
    assert "conversion worker stopped" in cut.error
    assert "retried at the next scan" in cut.error
    killed = LedgerEntry.objects.get(subject="Question 3")
    assert (killed.outcome, killed.attempts, killed.message) == (Outcome.FAILED, 1, None)
    assert not killed.records.exists()
    killed_uid = next(uid for uid, i in uids.items() if i == 3)
    assert account.flags()[killed_uid] == set()  # never flagged: it did not commit
    made = {t.data["title"] for t in tickets()}
    assert "Question 3" not in made
    assert MailboxLease.objects.get(mailbox=mailbox).token == ""  # the scan let it go

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", actions.create_ticket)
    again = scanner.scan(Mailbox.objects.get(pk=mailbox.pk))

    assert again.status == ScanRun.Status.OK, again.error
    assert sorted(t.data["title"] for t in tickets()) == sorted(f"Question {i}" for i in range(8))
    assert LedgerEntry.objects.count() == 8
    assert LedgerEntry.objects.get(subject="Question 3").attempts == 2
    assert all(f == {b"\\Seen"} for f in account.flags().values())


@scanning
def test_workers_commit_nothing_once_the_lease_is_taken_over(
    account: Account, org: Org, in_workers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    questions(account, 10)
    mailbox = make_mailbox(account, org.admin)

    def steal_then_create(action: Any, ctx: Any) -> Any:
        if ctx.message.subject == "Question 4":  # another scan takes the (expired) lease over
            MailboxLease.objects.filter(mailbox_id=mailbox.pk).update(token="someone-else")
        return actions.create_ticket(action, ctx)

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", steal_then_create)
    run = scanner.scan(mailbox)

    assert in_workers == [2]
    assert run.status == ScanRun.Status.FAILED
    assert "taken over" in run.error
    made = {t.data["title"] for t in tickets()}
    before = len(made)
    # What fenced before the theft committed (the thief's own message among it); nothing
    # after it. Which others fenced first depends on how the workers' lines ran.
    assert "Question 4" in made
    assert before < 10
    assert all(f == set() for f in account.flags().values())  # the scan no longer holds it

    MailboxLease.objects.filter(mailbox=mailbox).update(token="", expires_at=None)
    monkeypatch.setitem(actions._HANDLERS, "create_ticket", actions.create_ticket)
    assert scanner.scan(Mailbox.objects.get(pk=mailbox.pk)).counts == {"created": 10 - before}
    assert sorted(t.data["title"] for t in tickets()) == sorted(f"Question {i}" for i in range(10))
    assert all(f == {b"\\Seen"} for f in account.flags().values())


@scanning
def test_a_scan_asked_to_stop_finishes_the_workers_messages_and_keeps_its_place(
    account: Account, org: Org, in_workers: list[int]
) -> None:
    questions(account, 6)
    mailbox = make_mailbox(account, org.admin)

    stopped = scanner.scan(mailbox, should_stop=lambda: True)

    assert stopped.status == ScanRun.Status.STOPPED
    converted = stopped.counts["created"]
    # The messages at hand when it was asked: what each worker converts, and its next.
    assert 1 <= converted <= 2 * workers.HELD < 6
    assert len(tickets()) == converted
    assert sum(f == {b"\\Seen"} for f in account.flags().values()) == converted
    rest = scanner.scan(Mailbox.objects.get(pk=mailbox.pk))
    assert rest.counts == {"created": 6 - converted}
    assert len(tickets()) == 6


@scanning
def test_a_scan_from_a_thread_converts_alone(
    account: Account, org: Org, in_workers: list[int]
) -> None:
    """ "Scan now" without Redis runs in a thread of the web server: no fork from there."""
    questions(account, 4)
    mailbox = make_mailbox(account, org.admin)
    runs: list[ScanRun] = []

    def scan() -> None:
        try:
            runs.append(scanner.scan(Mailbox.objects.get(pk=mailbox.pk)))
        finally:
            connections.close_all()

    thread = threading.Thread(target=scan)
    thread.start()
    thread.join(timeout=120)

    assert in_workers == []
    assert [r.counts for r in runs] == [{"created": 4}]


@scanning
def test_a_scan_analyzes_the_tables_it_has_grown(
    account: Account, org: Org, in_workers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL plans look-ups in stored emails from its statistics; a scan that has grown
    the table of emails past the threshold (here 2 changes) analyzes it after a batch."""
    monkeypatch.setattr(statistics, "AT_LEAST", 2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE crm_message")
    before = analyzed("crm_message")
    for i in range(3):  # stored earlier, by the add-in say: the table is due before the scan
        ingest.store(email(f"P{i} <p{i}@earlier.example>", "Earlier", f"e{i}@x"), source="addin")
    analyzed("crm_message")  # this connection's inserts counted
    questions(account, 4)
    mailbox = make_mailbox(account, org.admin)

    run = scanner.scan(mailbox)

    assert run.counts == {"created": 4}
    assert analyzed("crm_message") > before
