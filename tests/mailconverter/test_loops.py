"""The loop guard: automatic mail is recognised, with a reason; people's mail is not."""

from __future__ import annotations

import pytest

from crm.email.parse import parse
from mailconverter.loops import automatic_reason
from tests.mailconverter.helpers import corpus, mail

OWN = ["support@crm.test"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("auto_reply_rfc3834.eml", "Auto-Submitted: auto-replied"),
        ("out_of_office_german_subject_only.eml", "out-of-office"),
        ("out_of_office_italian_x_autoreply.eml", "X-Autoreply"),
        ("out_of_office_french_subject_only.eml", "out-of-office"),
        ("bulk_newsletter_precedence.eml", "Precedence: bulk"),
        ("bounce_dsn_null_return_path.eml", "delivery status notification"),
        ("own_mailbox_sender.eml", "own mailboxes"),
        ("no_reply_sender.eml", "automated sender no-reply@shop.example"),
    ],
)
def test_automatic_mail_is_recognised_with_its_reason(name: str, reason: str) -> None:
    found = automatic_reason(parse(mail(name)), own_addresses=OWN)
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "name",
    [
        "customer_question.eml",
        "customer_question_with_attachment.eml",
        "reply_threaded_by_in_reply_to.eml",
    ],
)
def test_mail_a_person_wrote_is_not_automatic(name: str) -> None:
    assert automatic_reason(parse(mail(name, number="TT1")), own_addresses=OWN) is None


def test_auto_submitted_no_is_a_person() -> None:
    raw = b"Auto-Submitted: no\r\n" + mail("customer_question.eml")
    assert automatic_reason(parse(raw)) is None


def test_every_report_of_the_mimekit_corpus_is_automatic() -> None:
    folder = corpus("mimekit-reports")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt")
    assert files
    for path in files:
        assert automatic_reason(parse(path.read_bytes())), path.name
