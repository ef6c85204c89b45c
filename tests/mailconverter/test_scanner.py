"""The scan loop against a real Dovecot: once and only once, whatever happens.

Expected figures come from what was delivered (the test's own manifest), not from the code.
"""

from __future__ import annotations

from typing import Any

import pytest

from crm.models import Comment, DocumentLink, Message, MessageLink, QuarantinedMessage, Record, User
from crm.services import blobs
from mailconverter import actions, scanner, services
from mailconverter.imap import ImapError, Session
from mailconverter.models import (
    Folder,
    LedgerEntry,
    Mailbox,
    MailboxLease,
    Outcome,
    QuarantinedMail,
    Rule,
    ScanRun,
)
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.conftest import PASSWORD, Account
from tests.mailconverter.helpers import mail

pytestmark = [pytest.mark.imap, pytest.mark.django_db]

CREATE = [{"type": "create_ticket"}]
UPDATE_ELSE_CREATE = [
    {
        "conditions": [{"field": "subject", "operator": "has_ticket_number"}],
        "actions": [{"type": "update_ticket"}],
    },
    {"conditions": [], "actions": [{"type": "update_ticket"}]},
    {"conditions": [], "actions": CREATE},
]


def make_mailbox(
    account: Account,
    owner: User,
    *,
    rules: list[dict[str, Any]] | None = None,
    folders: tuple[str, ...] = ("INBOX",),
    name: str = "support",
    **fields: Any,
) -> Mailbox:
    mailbox = Mailbox(
        name=name,
        host="127.0.0.1",
        port=account.server.port,
        security=Mailbox.Security.NONE,
        username=account.user,
        address="support@crm.test",
        owner=owner,
        **fields,
    )
    mailbox.set_password(PASSWORD)
    mailbox.save()
    for folder in folders:
        Folder.objects.create(mailbox=mailbox, name=folder, selected=True)
    for position, rule in enumerate(rules if rules is not None else [{"actions": CREATE}]):
        Rule.objects.create(
            mailbox=mailbox,
            position=position,
            name=rule.get("name", f"rule {position}"),
            match=rule.get("match", "all"),
            conditions=rule.get("conditions", []),
            actions=rule["actions"],
            stop_after_match=rule.get("stop", True),
        )
    return mailbox


def tickets() -> list[Record]:
    return list(Record.objects.filter(module__name="Tickets", deleted_at=None).order_by("pk"))


def outcomes(mailbox: Mailbox) -> dict[int, str]:
    return dict(LedgerEntry.objects.filter(mailbox=mailbox).values_list("uid", "outcome"))


# --- the happy path ----------------------------------------------------------------------------


def test_new_mail_becomes_a_ticket_and_a_second_scan_processes_nothing(
    account: Account, org: Org
) -> None:
    uid = account.deliver(mail("customer_question_with_attachment.eml"))
    contact = make_record(
        "Contacts", org.admin, first_name="Anna", last_name="Rossi", email="anna.rossi@acme.example"
    )
    mailbox = make_mailbox(account, org.admin)

    run = scanner.scan(mailbox)

    assert run.status == ScanRun.Status.OK, run.error
    assert run.counts == {"created": 1}
    [ticket] = tickets()
    assert ticket.data["title"] == "Photo of the printer"
    assert ticket.data["status"] == "Open"
    assert ticket.data["contact"] == contact.pk
    assert "See the attached photo." in ticket.data["description"]
    assert ticket.owner_user == org.admin
    message = Message.objects.get()
    assert MessageLink.objects.filter(message=message, record=ticket).exists()
    assert DocumentLink.objects.filter(record=ticket).count() == 1  # the attachment
    assert account.flags() == {uid: {b"\\Seen"}}
    entry = LedgerEntry.objects.get()
    assert (entry.outcome, entry.uid, list(entry.records.all())) == ("created", uid, [ticket])
    assert Folder.objects.get().last_uid == uid

    again = scanner.scan(mailbox)
    assert again.status == ScanRun.Status.OK
    assert again.processed == 0
    assert len(tickets()) == 1


def test_with_leave_nothing_is_flagged_and_the_cursor_still_prevents_a_second_ticket(
    account: Account, org: Org
) -> None:
    uid = account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.admin, after_scan=Mailbox.AfterScan.LEAVE)
    scanner.scan(mailbox)
    scanner.scan(mailbox)
    assert account.flags() == {uid: set()}
    assert len(tickets()) == 1


def test_processed_and_unmatched_mail_is_moved_after_commit(account: Account, org: Org) -> None:
    account.create_folder("Done")
    account.create_folder("Unmatched")
    account.deliver(mail("customer_question.eml"))
    account.deliver(mail("auto_reply_rfc3834.eml"))
    mailbox = make_mailbox(
        account,
        org.admin,
        after_scan=Mailbox.AfterScan.MOVE,
        processed_folder="Done",
        unmatched_folder="Unmatched",
    )
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 1, "loop": 1}, run.error
    assert account.uids("INBOX") == []
    assert len(account.uids("Done")) == 1
    assert len(account.uids("Unmatched")) == 1


# --- failures: quarantine, attempts, the folder goes on ----------------------------------------


def test_a_failing_message_is_not_seen_is_quarantined_and_after_three_attempts_waits(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = mail("customer_question.eml")
    poison_uid = account.deliver(poison)
    mailbox = make_mailbox(account, org.admin)

    def explode(action: Any, ctx: Any) -> Any:
        # Writes something first, to prove the rollback takes it away.
        make_record("Tickets", org.admin, title="half-done", status="Open")
        raise RuntimeError("the action blew up")

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", explode)

    for attempt in (1, 2, 3):
        run = scanner.scan(mailbox)
        assert run.counts == {"failed": 1}
        entry = LedgerEntry.objects.get(uid=poison_uid)
        assert entry.attempts == attempt
        assert "the action blew up" in entry.error
        assert account.flags()[poison_uid] == set()  # never \Seen: nothing committed
        assert tickets() == []
        assert Message.objects.count() == 0
        assert Folder.objects.get().last_uid == (poison_uid if attempt == 3 else 0)

    held = QuarantinedMail.objects.get(entry__uid=poison_uid)
    assert blobs.read(held.raw.name) == poison
    assert QuarantinedMessage.objects.count() == 0  # no second, unlinked quarantine row

    # Parked: later mail goes through, the poison message is not fetched again.
    later_uid = account.deliver(mail("customer_question_with_attachment.eml"))
    monkeypatch.setitem(actions._HANDLERS, "create_ticket", actions.create_ticket)
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 1}
    assert LedgerEntry.objects.get(uid=poison_uid).attempts == 3
    assert account.flags() == {poison_uid: set(), later_uid: {b"\\Seen"}}
    assert Folder.objects.get().last_uid == later_uid

    # The administrator's retry converts it from the stored bytes; the next scan marks it read.
    entry = services.retry(actor=org.admin, entry=LedgerEntry.objects.get(uid=poison_uid))
    assert entry.outcome == Outcome.CREATED
    assert QuarantinedMail.objects.get(entry=entry).resolved_at is not None
    assert len(tickets()) == 2
    scanner.scan(mailbox)
    assert account.flags()[poison_uid] == {b"\\Seen"}
    assert len(tickets()) == 2


class WorkerKilled(BaseException):
    """Stands for SIGKILL or an out-of-memory kill: nothing in the process gets to react."""


def test_a_message_that_kills_the_worker_waits_after_three_attempts_and_the_folder_goes_on(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = mail("customer_question.eml")
    poison_uid = account.deliver(poison)
    mailbox = make_mailbox(account, org.admin)

    def die(action: Any, ctx: Any) -> Any:
        raise WorkerKilled

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", die)
    for attempt in (1, 2, 3):
        with pytest.raises(WorkerKilled):
            scanner.scan(mailbox)
        MailboxLease.objects.filter(mailbox=mailbox).update(expires_at=None)  # lease ran out
        entry = LedgerEntry.objects.get(uid=poison_uid)
        assert (entry.outcome, entry.attempts) == ("failed", attempt)
        assert "did not finish" in entry.error
        assert account.flags()[poison_uid] == set()
        assert tickets() == []

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", actions.create_ticket)
    later_uid = account.deliver(mail("customer_question_with_attachment.eml"))
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 1}
    assert account.flags() == {poison_uid: set(), later_uid: {b"\\Seen"}}
    held = QuarantinedMail.objects.get(entry__uid=poison_uid)
    assert blobs.read(held.raw.name) == poison
    assert Folder.objects.get().last_uid == later_uid


def test_a_failure_holds_the_cursor_but_not_the_mail_behind_it(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = account.deliver(mail("reply_with_ticket_number_in_subject.eml", number="TT999"))
    second = account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(
        account,
        org.admin,
        rules=[
            {
                "conditions": [{"field": "subject", "operator": "has_ticket_number"}],
                "actions": [{"type": "explode"}],
            },
            {"actions": CREATE},
        ],
    )
    monkeypatch.setitem(actions._HANDLERS, "explode", _raise)
    run = scanner.scan(mailbox)
    assert run.counts == {"failed": 1, "created": 1}
    assert account.flags() == {first: set(), second: {b"\\Seen"}}
    assert Folder.objects.get().last_uid == 0  # the failed message is retried next time
    run = scanner.scan(mailbox)
    assert run.counts == {"failed": 1}  # the converted one is not processed again
    assert len(tickets()) == 1


def _raise(action: Any, ctx: Any) -> Any:
    raise RuntimeError("boom")


def test_an_oversize_message_is_quarantined_from_its_header_and_left_unread(
    account: Account, org: Org, settings: Any
) -> None:
    settings.CONVERTER_MAX_MESSAGE_BYTES = 10_000
    big = mail("customer_question.eml") + b"x" * 50_000 + b"\r\n"
    uid = account.deliver(big)
    small = account.deliver(mail("customer_question_with_attachment.eml"))
    mailbox = make_mailbox(account, org.admin)
    run = scanner.scan(mailbox)
    assert run.counts == {"oversize": 1, "created": 1}
    entry = LedgerEntry.objects.get(uid=uid)
    assert "over the limit of 10000" in entry.reason
    held = QuarantinedMail.objects.get(entry=entry)
    assert held.kind == QuarantinedMail.Kind.OVERSIZE
    assert blobs.read(held.raw.name).startswith(b"From: Anna Rossi")
    assert held.size < 1000
    assert account.flags() == {uid: set(), small: {b"\\Seen"}}
    assert scanner.scan(mailbox).processed == 0


# --- never twice -------------------------------------------------------------------------------


def test_a_changed_uidvalidity_restarts_the_cursor_without_doubles(
    account: Account, org: Org
) -> None:
    for name in ("customer_question.eml", "customer_question_with_attachment.eml"):
        account.deliver(mail(name))
    mailbox = make_mailbox(account, org.admin, after_scan=Mailbox.AfterScan.LEAVE)
    assert scanner.scan(mailbox).counts == {"created": 2}
    before = Folder.objects.get().uidvalidity

    account.reset_uidvalidity()
    account.deliver(mail("reply_threaded_by_in_reply_to.eml"))
    run = scanner.scan(mailbox)

    assert Folder.objects.get().uidvalidity != before
    assert run.counts == {"duplicate": 2, "created": 1}, run.error
    assert len(tickets()) == 3
    assert Message.objects.count() == 3


def test_the_same_email_in_two_folders_makes_one_ticket(account: Account, org: Org) -> None:
    account.create_folder("Archive")
    raw = mail("customer_question.eml")
    account.deliver(raw)
    account.deliver(raw, folder="Archive")
    mailbox = make_mailbox(account, org.admin, folders=("INBOX", "Archive"))
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 1, "duplicate": 1}
    assert len(tickets()) == 1
    assert Message.objects.count() == 1
    # Both copies are settled: read, and never looked at again.
    assert all(f == {b"\\Seen"} for f in account.flags("Archive").values())
    assert scanner.scan(mailbox).processed == 0


def test_the_same_email_in_two_mailboxes_makes_one_ticket(
    account: Account, dovecot: Any, org: Org
) -> None:
    other = dovecot.add_account()
    raw = mail("customer_question.eml")
    account.deliver(raw)
    other.deliver(raw)
    first = make_mailbox(account, org.admin)
    second = make_mailbox(other, org.admin, name="sales")
    assert scanner.scan(first).counts == {"created": 1}
    assert scanner.scan(second).counts == {"duplicate": 1}
    assert len(tickets()) == 1


def test_a_mailbox_being_scanned_is_not_scanned_twice_at_once(account: Account, org: Org) -> None:
    account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.admin)
    token = scanner._acquire(mailbox)
    assert token is not None
    run = scanner.scan(mailbox)
    assert run.status == ScanRun.Status.BUSY
    assert tickets() == []
    scanner._release(mailbox, token)
    assert scanner.scan(mailbox).counts == {"created": 1}
    assert MailboxLease.objects.get(mailbox=mailbox).token == ""


def test_a_scan_that_lost_its_lease_commits_nothing_more(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("customer_question.eml", "customer_question_with_attachment.eml"):
        account.deliver(mail(name))
    mailbox = make_mailbox(account, org.admin)
    real = actions.create_ticket

    def steal_then_create(action: Any, ctx: Any) -> Any:
        # Another worker takes over the (expired) lease while this one is mid-scan.
        MailboxLease.objects.filter(mailbox=mailbox).update(token="someone-else")
        return real(action, ctx)

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", steal_then_create)
    run = scanner.scan(mailbox)
    assert run.status == ScanRun.Status.FAILED
    assert "taken over" in run.error
    assert len(tickets()) == 1  # the first committed before the theft; the second never did
    # Not even the committed one is flagged by a scan that no longer holds the mailbox …
    assert all(f == set() for f in account.flags().values())
    # … the next holder does it, and converts the rest.
    MailboxLease.objects.filter(mailbox=mailbox).update(expires_at=None)
    monkeypatch.setitem(actions._HANDLERS, "create_ticket", real)
    assert scanner.scan(mailbox).counts == {"created": 1}
    assert len(tickets()) == 2
    assert all(f == {b"\\Seen"} for f in account.flags().values())


# --- loop guard --------------------------------------------------------------------------------

AUTOMATIC = [
    "auto_reply_rfc3834.eml",
    "out_of_office_german_subject_only.eml",
    "out_of_office_italian_x_autoreply.eml",
    "out_of_office_french_subject_only.eml",
    "bulk_newsletter_precedence.eml",
    "bounce_dsn_null_return_path.eml",
    "own_mailbox_sender.eml",
    "no_reply_sender.eml",
]


def test_auto_replies_bounces_and_our_own_mail_make_no_tickets_and_say_why(
    account: Account, org: Org
) -> None:
    for name in AUTOMATIC:
        account.deliver(mail(name))
    mailbox = make_mailbox(account, org.admin)
    run = scanner.scan(mailbox)
    assert run.counts == {"loop": len(AUTOMATIC)}
    assert tickets() == []
    reasons = list(LedgerEntry.objects.values_list("reason", flat=True))
    assert all(reasons)
    assert any("RFC 3834" in r for r in reasons)
    assert any("bounce" in r for r in reasons)


def test_a_sender_over_the_ticket_limit_opens_no_more_tickets(
    account: Account, org: Org, settings: Any
) -> None:
    settings.CONVERTER_SENDER_TICKET_LIMIT = 2
    for i in range(4):
        raw = mail("customer_question.eml").replace(b"question-1@", f"loop-{i}@".encode())
        account.deliver(raw)
    mailbox = make_mailbox(account, org.admin)
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 2, "unmatched": 2}
    assert len(tickets()) == 2
    assert LedgerEntry.objects.filter(reason__contains="sender limit").count() == 2


def test_a_blocked_sender_is_skipped_and_recorded(account: Account, org: Org) -> None:
    from django.utils import timezone

    from mailconverter.models import BlockedSender

    account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.admin)
    BlockedSender.objects.create(
        mailbox=mailbox, address="anna.rossi@acme.example", created_at=timezone.now()
    )
    assert scanner.scan(mailbox).counts == {"blocked": 1}
    assert tickets() == []


# --- ticket updates and links ------------------------------------------------------------------


def test_a_reply_with_the_ticket_number_updates_that_ticket(account: Account, org: Org) -> None:
    ticket = make_record("Tickets", org.admin, title="Printer on fire", status="Closed")
    account.deliver(mail("reply_with_ticket_number_in_subject.eml", number=ticket.number))
    mailbox = make_mailbox(account, org.admin, rules=UPDATE_ELSE_CREATE)
    run = scanner.scan(mailbox)
    assert run.counts == {"updated": 1}, run.error
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"  # a closed ticket is reopened
    [comment] = Comment.objects.filter(record=ticket)
    assert "It is still burning." in comment.body
    assert comment.via_mail
    assert comment.author is None
    assert comment.author_address == Message.objects.get().from_address
    assert MessageLink.objects.filter(record=ticket).count() == 1
    assert len(tickets()) == 1


def test_a_reply_threaded_to_a_tickets_email_updates_it_and_unknown_numbers_fall_through(
    account: Account, org: Org
) -> None:
    account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.admin, rules=UPDATE_ELSE_CREATE)
    assert scanner.scan(mailbox).counts == {"created": 1}
    [ticket] = tickets()
    account.deliver(mail("reply_threaded_by_in_reply_to.eml"))
    account.deliver(mail("reply_with_ticket_number_in_subject.eml", number="TT999999"))
    run = scanner.scan(mailbox)
    assert run.counts == {"updated": 1, "created": 1}, run.error
    assert MessageLink.objects.filter(record=ticket).count() == 2
    assert len(tickets()) == 2


def test_link_rules_link_every_match_and_a_drop_folder_creates_the_lead(
    account: Account, org: Org
) -> None:
    account.create_folder("CRM/Leads")
    first = make_record("Contacts", org.admin, last_name="Rossi", email="anna.rossi@acme.example")
    second = make_record("Contacts", org.admin, last_name="A.", email="anna.rossi@acme.example")
    company = make_record("Companies", org.admin, name="Acme", email="info@acme.example")
    account.deliver(mail("customer_question_with_attachment.eml"))
    account.deliver(mail("customer_question.eml"), folder="CRM/Leads")
    mailbox = make_mailbox(
        account,
        org.admin,
        folders=("INBOX", "CRM/Leads"),
        rules=[
            {
                "conditions": [{"field": "folder", "operator": "equals", "value": "crm/leads"}],
                "actions": [{"type": "link_or_create", "module": "Leads", "by": "sender"}],
            },
            {
                "actions": [
                    {"type": "link", "module": "Contacts", "by": "sender"},
                    {"type": "link", "module": "Companies", "by": "sender"},
                ]
            },
        ],
    )
    run = scanner.scan(mailbox)
    assert run.counts == {"linked": 2}, run.error
    linked = {r.pk for r in Record.objects.filter(message_links__isnull=False)}
    [lead] = Record.objects.filter(module__name="Leads")
    assert linked == {first.pk, second.pk, company.pk, lead.pk}
    assert (lead.data["first_name"], lead.data["last_name"]) == ("Anna", "Rossi")
    assert lead.data["email"] == "anna.rossi@acme.example"
    assert tickets() == []


# --- between commit and flag; the owner's rights; folders ---------------------------------------


def test_a_crash_between_commit_and_flag_is_finished_by_the_next_scan_without_redoing(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.admin)

    def cut(self: Any, uids: Any) -> None:
        raise ImapError("The connection to the server was cut (test).")

    monkeypatch.setattr(Session, "mark_seen", cut)
    run = scanner.scan(mailbox)
    assert run.status == ScanRun.Status.FAILED
    assert "cut" in run.error
    assert len(tickets()) == 1
    assert account.flags() == {uid: set()}
    assert LedgerEntry.objects.get().after_scan_pending
    assert Folder.objects.get().last_uid == 0  # the cursor waits for the flag

    monkeypatch.undo()
    run = scanner.scan(mailbox)
    assert run.status == ScanRun.Status.OK
    assert run.processed == 0  # settled by the ledger, not converted again
    assert account.flags() == {uid: {b"\\Seen"}}
    assert not LedgerEntry.objects.get().after_scan_pending
    assert Folder.objects.get().last_uid == uid
    assert len(tickets()) == 1


def test_an_owner_who_may_not_create_tickets_gets_the_mail_quarantined_with_the_reason(
    account: Account, org: Org
) -> None:
    from tests.factories import grant

    grant(org.standard, "Tickets", "view")
    uid = account.deliver(mail("customer_question.eml"))
    mailbox = make_mailbox(account, org.alice)
    run = scanner.scan(mailbox)
    assert run.counts == {"failed": 1}
    entry = LedgerEntry.objects.get(uid=uid)
    assert "may not create Tickets" in entry.error
    assert account.flags() == {uid: set()}
    assert tickets() == []


def test_refresh_folders_lists_counts_and_never_offers_trash_drafts_or_junk(
    account: Account, org: Org
) -> None:
    account.create_folder("CRM/Leads")
    account.deliver(mail("customer_question.eml"))
    account.deliver(mail("customer_question_with_attachment.eml"), flags=(b"\\Seen",))
    mailbox = make_mailbox(account, org.admin, folders=("Trash", "Gone"))
    folders = {f.name: f for f in services.refresh_folders(mailbox)}
    assert (folders["INBOX"].message_count, folders["INBOX"].unseen_count) == (2, 1)
    assert folders["Trash"].special_use == "\\Trash"
    assert not folders["Trash"].selected  # un-ticked: Trash is never scanned
    assert "CRM/Leads" in folders
    assert not Folder.objects.get(name="Gone").exists_on_server
    # Even ticked by hand, Trash is not scanned.
    account.deliver(mail("reply_threaded_by_in_reply_to.eml"), folder="Trash")
    Folder.objects.filter(mailbox=mailbox).update(selected=True)
    Folder.objects.filter(name="INBOX").update(selected=False)
    run = scanner.scan(mailbox)
    assert run.processed == 0, run.counts
    assert not LedgerEntry.objects.filter(folder__name="Trash").exists()


def test_test_connection_answers_in_words(account: Account, org: Org) -> None:
    mailbox = make_mailbox(account, org.admin)
    stored = Mailbox.objects.values_list("secret", flat=True).get(pk=mailbox.pk)
    assert PASSWORD not in stored  # encrypted at rest
    assert services.test_connection(mailbox).ok
    mailbox.set_password("wrong")
    check = services.test_connection(mailbox)
    assert not check.ok
    assert "Wrong username or password" in check.message


def test_the_scan_command_runs_in_the_foreground_and_names_unknown_mailboxes(
    account: Account, org: Org
) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    account.deliver(mail("customer_question.eml"))
    make_mailbox(account, org.admin)
    out = StringIO()
    call_command("mailconverter_scan", "--all", stdout=out, stderr=StringIO())
    assert "support: Finished: 1 created." in out.getvalue()
    assert len(tickets()) == 1
    with pytest.raises(CommandError, match="No mailbox named 'nope'"):
        call_command("mailconverter_scan", "--mailbox", "nope")


def test_a_scan_asked_to_stop_finishes_the_message_at_hand_and_keeps_its_place(
    account: Account, org: Org
) -> None:
    uids = [
        account.deliver(mail("customer_question.eml").replace(b"question-1@", f"s{i}@".encode()))
        for i in range(3)
    ]
    mailbox = make_mailbox(account, org.admin)
    run = scanner.scan(mailbox, should_stop=lambda: True)
    assert run.status == ScanRun.Status.STOPPED
    assert run.counts == {"created": 1}
    assert Folder.objects.get().last_uid == uids[0]
    assert account.flags()[uids[0]] == {b"\\Seen"}
    assert scanner.scan(mailbox).counts == {"created": 2}


def test_a_long_scan_keeps_its_place_batch_by_batch_when_the_worker_dies(
    account: Account, org: Org, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.CONVERTER_FETCH_BATCH = 2
    uids = [
        account.deliver(mail("customer_question.eml").replace(b"question-1@", f"b{i}@".encode()))
        for i in range(5)
    ]
    mailbox = make_mailbox(account, org.admin)
    real = actions.create_ticket
    calls = []

    def die_on_the_fourth(action: Any, ctx: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise WorkerKilled
        return real(action, ctx)

    monkeypatch.setitem(actions._HANDLERS, "create_ticket", die_on_the_fourth)
    with pytest.raises(WorkerKilled):
        scanner.scan(mailbox)
    assert Folder.objects.get().last_uid == uids[1]  # the first batch is done and flagged
    assert len(tickets()) == 3
    flags = account.flags()
    assert [flags[u] == {b"\\Seen"} for u in uids] == [True, True, False, False, False]

    MailboxLease.objects.filter(mailbox=mailbox).update(expires_at=None)
    monkeypatch.setitem(actions._HANDLERS, "create_ticket", real)
    run = scanner.scan(mailbox)
    assert run.counts == {"created": 2}  # the third is finished (flagged), not converted again
    assert len(tickets()) == 5
    assert all(f == {b"\\Seen"} for f in account.flags().values())
    assert Folder.objects.get().last_uid == uids[-1]
