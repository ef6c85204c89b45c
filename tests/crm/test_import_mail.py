"""`manage.py import_mail`: files, mbox and Maildir in; bad ones named, the rest imported."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from crm.models import Message, MessageLink, QuarantinedMessage
from crm.services import ingest
from tests.conftest import Org
from tests.factories import make_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"


def _raw(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "jane@customer.example"
    msg["Subject"] = f"Message {n}"
    msg["Message-ID"] = f"<m{n}@customer.example>"
    msg.set_content(f"Body {n}\n")
    return bytes(msg)


def test_eml_mbox_and_maildir_are_imported_and_linked(org: Org, tmp_path: Path) -> None:
    contact = make_record("Contacts", org.alice, last_name="Doe")
    eml = tmp_path / "one.eml"
    eml.write_bytes(_raw(1))
    box = mailbox.mbox(tmp_path / "archive.mbox")
    for n in (2, 3):
        box.add(_raw(n))
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(_raw(4))
    maildir.flush()
    out = StringIO()
    call_command(
        "import_mail",
        str(eml),
        str(tmp_path / "archive.mbox"),
        str(tmp_path / "Maildir"),
        "--link",
        f"Contacts:{contact.number}",
        "--user",
        "alice",
        stdout=out,
    )
    assert "4 stored" in out.getvalue()
    assert sorted(Message.objects.values_list("subject", flat=True)) == [
        f"Message {n}" for n in (1, 2, 3, 4)
    ]
    assert MessageLink.objects.filter(record=contact).count() == 4


def test_a_message_that_fails_is_named_and_the_rest_are_imported(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in (1, 2, 3):
        (tmp_path / f"{n}.eml").write_bytes(_raw(n))
    real_save = ingest._save

    def failing_on_two(parsed, *args, **kwargs):  # type: ignore[no-untyped-def]
        if parsed.subject == "Message 2":
            raise RuntimeError("storage unavailable")
        return real_save(parsed, *args, **kwargs)

    monkeypatch.setattr(ingest, "_save", failing_on_two)
    err = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "import_mail",
            *sorted(str(p) for p in tmp_path.glob("*.eml")),
            stdout=StringIO(),
            stderr=err,
        )
    assert "2.eml" in err.getvalue()
    assert "storage unavailable" in err.getvalue()
    assert Message.objects.count() == 2
    assert QuarantinedMessage.objects.get().origin.endswith("2.eml")


def test_linking_to_a_record_the_user_cannot_see_is_refused_before_importing(
    org: Org, tmp_path: Path
) -> None:
    from crm.models import Module

    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = "private"
    contacts.save()
    hidden = make_record(contacts, org.charlie, last_name="Secret")
    (tmp_path / "a.eml").write_bytes(_raw(1))
    with pytest.raises(CommandError, match="Cannot link"):
        call_command(
            "import_mail",
            str(tmp_path / "a.eml"),
            "--link",
            f"Contacts:{hidden.number}",
            "--user",
            "alice",
            stdout=StringIO(),
        )
    assert not Message.objects.exists()
