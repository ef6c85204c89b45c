"""The first run's sample mailbox: .eml files served as a folder, converted once, never more.

Expectations come from fixtures/sample_mailbox/manifest.json and the emails themselves (their
Message-IDs), never from the code under test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from email import message_from_bytes
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from crm.models import Document, DocumentLink, Message, Record
from crm.services import demo
from mailconverter import localsource, scanner
from mailconverter.imap import ConnectionSettings, ImapError, Session
from mailconverter.localsource import LocalSource
from mailconverter.models import Folder, LedgerEntry, Mailbox, ScanRun

SAMPLE = Path(settings.BASE_DIR) / "fixtures" / "sample_mailbox"
MANIFEST = json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))["emails"]
DEMO = Path(settings.BASE_DIR) / "fixtures" / "demo.json"


@pytest.fixture(autouse=True)
def _state_in_tmp(settings: Any, tmp_path: Path) -> None:
    # UIDs and flags of local sources live under VAR_DIR: the test's own.
    settings.VAR_DIR = tmp_path / "var"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def demo_data(db: None) -> None:
    demo.load(path=DEMO)


def local(host: str) -> ConnectionSettings:
    return ConnectionSettings(host=host, port=0, username="sample", password="")


def message_id(name: str) -> str:
    parsed = message_from_bytes((SAMPLE / name).read_bytes())
    return str(parsed["Message-ID"]).strip().strip("<>")


def run_demo_command() -> str:
    out = StringIO()
    call_command("mailconverter_demo", stdout=out)
    return out.getvalue()


def email_of(record: Record) -> str:
    return str(record.data.get("email", "")).lower()


def referenced(record: Record, field_name: str) -> Record:
    return Record.objects.get(pk=record.data[field_name])


def entry_for(name: str) -> LedgerEntry:
    return LedgerEntry.objects.select_related("message").get(message__message_id=message_id(name))


# --- the sample, end to end ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sample_mailbox_becomes_the_manifest_s_tickets_links_and_ignored_mail(
    demo_data: None,
) -> None:
    tickets_before = Record.objects.filter(module__name="Tickets").count()

    output = run_demo_command()

    expected = Counter(e["outcome"] for e in MANIFEST.values())
    for outcome, count in expected.items():
        assert f"{count} {outcome}" in output
    converted = LedgerEntry.objects.filter(mailbox__name=localsource.SAMPLE_NAME)
    assert Counter(converted.values_list("outcome", flat=True)) == expected
    made = Record.objects.filter(module__name="Tickets").count() - tickets_before
    assert made == expected["created"]

    for name, want in MANIFEST.items():
        outcome = want["outcome"]
        if outcome in ("loop", "ignored"):
            entry = converted.get(
                subject=message_from_bytes((SAMPLE / name).read_bytes())["Subject"]
            )
            assert entry.outcome == outcome, name
            assert not entry.records.exists(), name
            continue
        entry = entry_for(name)
        assert entry.outcome == outcome, name
        records = list(entry.records.select_related("module"))
        if outcome == "created":
            (ticket,) = [r for r in records if r.module.name == "Tickets"]
            assert entry.message is not None
            assert ticket.data["title"] == entry.message.subject
            if "contact" in want:
                assert email_of(referenced(ticket, "contact")) == want["contact"], name
            if "company" in want:
                assert referenced(ticket, "company").data["name"] == want["company"], name
            if "new_lead" in want:
                (lead,) = [r for r in records if r.module.name == "Leads"]
                assert email_of(lead) == want["new_lead"]
        if outcome == "linked":
            seen = {email_of(r) for r in records} | {r.data.get("name") for r in records}
            assert set(want["linked"]) <= seen, name
        if outcome == "updated":
            (ticket,) = records
            if "ticket_of" in want:
                (first,) = entry_for(want["ticket_of"]).records.filter(module__name="Tickets")
                assert ticket == first, name
                assert set(
                    Message.objects.filter(links__record=ticket).values_list(
                        "message_id", flat=True
                    )
                ) == {message_id(want["ticket_of"]), message_id(name)}
            if "ticket" in want:
                ticket.refresh_from_db()
                assert ticket.number == want["ticket"]
                assert ticket.data["status"] == want["status"]
                assert ticket.comments.filter(via_mail=True).exists()
        for title in want.get("documents", []):
            document = Document.objects.get(title=title)
            assert DocumentLink.objects.filter(document=document, record__in=records).exists()


@pytest.mark.django_db
def test_a_second_scan_converts_nothing_even_when_the_cursor_is_lost(demo_data: None) -> None:
    run_demo_command()
    messages = Message.objects.count()
    tickets = Record.objects.filter(module__name="Tickets").count()

    assert "no new sample email" in run_demo_command()

    mailbox = Mailbox.objects.get(name=localsource.SAMPLE_NAME)
    Folder.objects.filter(mailbox=mailbox).update(last_uid=0)  # as after a lost cursor
    run = scanner.scan(mailbox, session_factory=LocalSource)
    assert run.status == ScanRun.Status.OK
    assert run.processed == 0
    assert Message.objects.count() == messages
    assert Record.objects.filter(module__name="Tickets").count() == tickets
    # Every sample email was marked read after its commit, and the mark persists.
    with LocalSource(local(localsource.SAMPLE_HOST)) as source:
        uids = source.new_uids(0)
        assert len(uids) == len(MANIFEST)
        assert all(b"\\Seen" in flags for flags in source.flags(uids).values())
        assert source.new_uids(0, unseen_only=True) == []


# --- the source itself ---------------------------------------------------------------------------


def write(directory: Path, name: str, subject: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(
        f"From: a@example.org\nSubject: {subject}\nMessage-ID: <{subject}@x>\n\nHello\n".encode()
    )


def test_uids_and_uidvalidity_stay_put_and_a_vanished_uid_is_never_reused(
    settings: Any, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    settings.CONVERTER_LOCAL_SOURCES = [str(inbox)]
    write(inbox, "b.eml", "second")
    write(inbox, "c.eml", "third")
    with LocalSource(local(f"local:{inbox}")) as source:
        first = source.select("INBOX")
        assert source.new_uids(0) == [1, 2]
        assert dict(source.bodies([1, 2], source.sizes([1, 2]), batch=50, batch_bytes=10**6))[
            2
        ].startswith(b"From: a@example.org\nSubject: third")

    (inbox / "b.eml").unlink()
    write(inbox, "a.eml", "early-name")  # sorts first, arrives last
    with LocalSource(local(f"local:{inbox}")) as source:
        again = source.select("INBOX")
        assert again.uidvalidity == first.uidvalidity
        assert source.new_uids(0) == [2, 3]
        body = dict(source.bodies([3], source.sizes([3]), batch=50, batch_bytes=10**6))[3]
        assert b"early-name" in body
        assert source.header(3).endswith(b"\n\n")
        assert b"Hello" not in source.header(3)


@pytest.mark.parametrize(
    "host",
    [
        "local:/etc",
        "local:fixtures",  # the parent of the allowed directory
        "local:fixtures/sample_mailbox/../../crm",
        "local:",
    ],
)
def test_the_local_source_refuses_a_directory_outside_the_allowed_list(host: str) -> None:
    with pytest.raises(ImapError, match="local"), LocalSource(local(host)):
        pass


def test_a_configured_directory_is_allowed_and_the_sample_is_not_then(
    settings: Any, tmp_path: Path
) -> None:
    write(tmp_path / "mine", "one.eml", "one")
    settings.CONVERTER_LOCAL_SOURCES = [str(tmp_path / "mine")]
    with LocalSource(local(f"local:{tmp_path / 'mine'}")) as source:
        assert source.status("INBOX") == (1, 1)
    with pytest.raises(ImapError, match="CONVERTER_LOCAL_SOURCES"):
        LocalSource(local(localsource.SAMPLE_HOST)).connect()


def test_a_symlink_or_other_file_leading_out_of_the_directory_is_not_served(
    settings: Any, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    write(inbox, "mail.eml", "real")
    secret = tmp_path / "secret.eml"
    secret.write_bytes(b"Subject: server secret\n\nroot password\n")
    os.symlink(secret, inbox / "link.eml")
    (inbox / "notes.txt").write_text("not mail")
    settings.CONVERTER_LOCAL_SOURCES = [str(inbox)]
    with LocalSource(local(f"local:{inbox}")) as source:
        uids = source.new_uids(0)
        bodies = dict(source.bodies(uids, source.sizes(uids), batch=50, batch_bytes=10**6))
    assert len(bodies) == 1
    assert all(b"root password" not in raw for raw in bodies.values())


@pytest.mark.django_db
def test_a_mailbox_naming_a_server_directory_reads_nothing(org: Any) -> None:
    mailbox = Mailbox.objects.create(
        name="sneaky", host="local:/etc", port=0, username="x", owner=org.admin
    )
    Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)

    run = scanner.scan(mailbox, session_factory=localsource.session_for)

    assert run.status == ScanRun.Status.FAILED
    assert "CONVERTER_LOCAL_SOURCES" in run.error
    assert not LedgerEntry.objects.filter(mailbox=mailbox).exists()


def test_only_local_hosts_get_the_local_source() -> None:
    assert isinstance(localsource.session_for(local("local:/x")), LocalSource)
    imap = localsource.session_for(local("imap.example.org"))
    assert type(imap) is Session
