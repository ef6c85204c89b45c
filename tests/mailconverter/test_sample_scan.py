"""The sample mailbox is an ordinary enabled mailbox: Scan now, the periodic scan and
`manage.py mailconverter_scan` read its local source, and new files in it are new mail.

Expectations come from fixtures/sample_mailbox/manifest.json and the emails the tests write.
"""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask

from crm.models import Message, Record, User
from crm.services import demo
from mailconverter import localsource, schedule
from mailconverter.models import LedgerEntry, Mailbox, ScanRun

SAMPLE = Path(settings.BASE_DIR) / "fixtures" / "sample_mailbox"
MANIFEST = json.loads((SAMPLE / "manifest.json").read_text(encoding="utf-8"))["emails"]
DEMO = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
BASE = "/settings/mail-converter/"
# A customer of the demo data (fixtures/demo.json) writing about something new.
NEW_MAIL = (
    b"From: Hannah Schneider <hannah.schneider@northwindtraders.example>\r\n"
    b"To: support@brightwave.example\r\n"
    b"Subject: Delivery address for the March order\r\n"
    b"Message-ID: <march-delivery-address@northwindtraders.example>\r\n"
    b"Date: Tue, 01 Dec 2026 09:12:00 +0100\r\n"
    b"\r\n"
    b"Hello, please ship the March order to our new warehouse in Hamburg.\r\n"
)


@pytest.fixture
def sample_copy(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped sample, copied where a test may drop new mail into it."""
    settings.VAR_DIR = tmp_path / "var"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    directory = tmp_path / "sample_mailbox"
    shutil.copytree(SAMPLE, directory)
    settings.CONVERTER_LOCAL_SOURCES = [str(directory)]
    monkeypatch.setattr(localsource, "SAMPLE_HOST", f"{localsource.PREFIX}{directory}")
    return directory


@pytest.fixture
def converted(db: None, sample_copy: Path) -> Mailbox:
    """The demo data, and the sample mailbox as the first run's `mailconverter_demo` left it."""
    demo.load(path=DEMO)
    call_command("mailconverter_demo", stdout=StringIO())
    assert LedgerEntry.objects.filter(mailbox__name=localsource.SAMPLE_NAME).count() == len(
        MANIFEST
    )
    return Mailbox.objects.get(name=localsource.SAMPLE_NAME)


@pytest.fixture
def admin_client(client: Client, converted: Mailbox) -> Client:
    client.force_login(User.objects.filter(is_superuser=True).order_by("pk").first())
    return client


def scan_command(mailbox: Mailbox) -> str:
    out = StringIO()
    call_command("mailconverter_scan", "--mailbox", mailbox.name, stdout=out)
    return out.getvalue()


def scan_now(client: Client, mailbox: Mailbox, on_commit: Any) -> ScanRun:
    with on_commit(execute=True):  # without Redis the queued scan runs here, on commit
        response = client.post(f"{BASE}{mailbox.pk}/scan/")
    assert response.status_code == 302
    run = ScanRun.objects.filter(mailbox=mailbox).latest("pk")
    page = client.get(f"{BASE}{mailbox.pk}/scan/{run.pk}/")
    assert "Finished" in page.content.decode()
    return run


def tickets() -> int:
    return Record.objects.filter(module__name="Tickets").count()


def test_the_sample_mailbox_is_created_enabled_with_its_periodic_scan(converted: Mailbox) -> None:
    assert converted.enabled
    entry = PeriodicTask.objects.get(name=schedule.task_name(converted.pk))
    assert entry.enabled
    assert json.loads(entry.args) == [converted.pk]


def test_scan_now_on_the_converted_sample_finds_nothing_new(
    admin_client: Client, converted: Mailbox, django_capture_on_commit_callbacks: Any
) -> None:
    messages, made = Message.objects.count(), tickets()

    run = scan_now(admin_client, converted, django_capture_on_commit_callbacks)

    assert run.status == ScanRun.Status.OK, run.error
    assert run.processed == 0
    assert Message.objects.count() == messages
    assert tickets() == made


def test_the_scan_command_finds_nothing_new_then_converts_a_dropped_file(
    converted: Mailbox, sample_copy: Path
) -> None:
    messages, made = Message.objects.count(), tickets()

    assert f"{converted.name}: Finished: no mail." in scan_command(converted)
    assert (Message.objects.count(), tickets()) == (messages, made)

    (sample_copy / "13-delivery-address.eml").write_bytes(NEW_MAIL)
    assert f"{converted.name}: Finished: 1 created." in scan_command(converted)

    assert tickets() == made + 1
    entry = LedgerEntry.objects.get(
        message__message_id="march-delivery-address@northwindtraders.example"
    )
    (ticket,) = entry.records.filter(module__name="Tickets")
    assert ticket.data["title"] == "Delivery address for the March order"
    contact = Record.objects.get(pk=ticket.data["contact"])
    assert contact.data["email"].lower() == "hannah.schneider@northwindtraders.example"
    # Once converted, it is not converted again.
    assert f"{converted.name}: Finished: no mail." in scan_command(converted)
    assert tickets() == made + 1


def test_scan_now_converts_a_file_dropped_into_the_sample_once(
    admin_client: Client,
    converted: Mailbox,
    sample_copy: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    made = tickets()
    (sample_copy / "13-delivery-address.eml").write_bytes(NEW_MAIL)

    run = scan_now(admin_client, converted, django_capture_on_commit_callbacks)
    assert run.status == ScanRun.Status.OK, run.error
    assert run.counts == {"created": 1}
    assert tickets() == made + 1

    again = scan_now(admin_client, converted, django_capture_on_commit_callbacks)
    assert again.processed == 0
    assert tickets() == made + 1


def test_test_connection_and_refresh_folders_read_the_local_source(
    admin_client: Client, converted: Mailbox
) -> None:
    checked = admin_client.post(f"{BASE}{converted.pk}/test-connection/", follow=True)
    assert f"{len(MANIFEST)} emails in one folder" in checked.content.decode()

    refreshed = admin_client.post(f"{BASE}{converted.pk}/folders/refresh/", follow=True)
    assert "The server lists 1 folders." in refreshed.content.decode()
    (inbox,) = converted.folders.all()
    assert (inbox.name, inbox.message_count, inbox.unseen_count) == ("INBOX", len(MANIFEST), 0)
