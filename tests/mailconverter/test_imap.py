"""The IMAP session against a real Dovecot: folders, cursor search, PEEK, flags, moves, words."""

from __future__ import annotations

import socket
import threading

import pytest

from mailconverter.imap import BodiesAhead, ConnectionSettings, ImapError, Session, test_connection
from tests.mailconverter.conftest import Account
from tests.mailconverter.helpers import mail

pytestmark = pytest.mark.imap


def test_folders_are_listed_and_trash_drafts_and_junk_are_never_scannable(
    account: Account,
) -> None:
    account.create_folder("CRM/Leads")
    account.create_folder("Spam")
    with Session(account.settings()) as imap:
        folders = {f.name: f for f in imap.folders()}
    assert {"INBOX", "Sent", "Trash", "Drafts", "Junk", "CRM/Leads", "Spam"} <= set(folders)
    scannable = {name for name, f in folders.items() if f.scannable}
    assert {"INBOX", "Sent", "CRM/Leads"} <= scannable
    assert not {"Trash", "Drafts", "Junk", "Spam"} & scannable
    assert folders["Trash"].special_use == "\\Trash"


def test_search_from_the_cursor_returns_only_new_uids(account: Account) -> None:
    uids = [account.deliver(mail("customer_question.eml")) for _ in range(3)]
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        assert imap.new_uids(0) == uids
        assert imap.new_uids(uids[0]) == uids[1:]
        # "UID n:*" always contains the last message (RFC 3501 §6.4.8): not new.
        assert imap.new_uids(uids[-1]) == []
        assert imap.new_uids(uids[-1] + 100) == []


def test_unseen_only_skips_mail_already_read(account: Account) -> None:
    read = account.deliver(mail("customer_question.eml"), flags=(b"\\Seen",))
    unread = account.deliver(mail("customer_question.eml"))
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        assert imap.new_uids(0, unseen_only=True) == [unread]
        assert read not in imap.new_uids(0, unseen_only=True)


def test_bodies_are_fetched_in_batches_without_setting_seen(account: Account) -> None:
    raws = [
        mail("customer_question.eml").replace(b"question-1", f"q{i}".encode()) for i in range(5)
    ]
    uids = [account.deliver(raw) for raw in raws]
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        sizes = imap.sizes(uids)
        fetched = dict(imap.bodies(uids, sizes, batch=2, batch_bytes=10_000_000))
    assert fetched == dict(zip(uids, raws, strict=True))
    assert sizes == {uid: len(raw) for uid, raw in zip(uids, raws, strict=True)}
    assert all(b"\\Seen" not in flags for flags in account.flags().values())


def test_bodies_ahead_come_batch_by_batch_and_the_connection_is_free_between_them(
    account: Account,
) -> None:
    raws = [
        mail("customer_question.eml").replace(b"question-1", f"q{i}".encode()) for i in range(5)
    ]
    uids = [account.deliver(raw) for raw in raws]
    groups = []
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        sizes = imap.sizes(uids)
        with BodiesAhead(imap, uids, sizes, batch=2, batch_bytes=10_000_000) as bodies:
            for group in bodies:
                groups.append([uid for uid, _ in group])
                bodies.idle()
                imap.mark_seen(uid for uid, _ in group)  # between batches, as the scan does
    assert groups == [uids[0:2], uids[2:4], uids[4:5]]
    assert all(b"\\Seen" in flags for flags in account.flags().values())


def test_a_failed_fetch_ahead_is_raised_when_its_batch_is_asked_for(account: Account) -> None:
    uids = [account.deliver(mail("customer_question.eml")) for _ in range(3)]
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        sizes = imap.sizes(uids)
        with BodiesAhead(imap, uids, sizes, batch=1, batch_bytes=10_000_000) as bodies:
            first = next(bodies)
            bodies.idle()  # the second batch is in, the third not asked for yet
            imap.client.logout()
            second = next(bodies)  # held already; the third is fetched now, and fails
            with pytest.raises(ImapError):
                next(bodies)
    assert [uid for uid, _ in first + second] == uids[:2]


def test_the_header_alone_can_be_fetched_for_an_oversize_message(account: Account) -> None:
    raw = mail("customer_question.eml") + b"x" * 200_000 + b"\r\n"
    uid = account.deliver(raw)
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        header = imap.header(uid)
    assert header.startswith(b"From: Anna Rossi")
    assert len(header) < 1000
    assert b"\\Seen" not in account.flags()[uid]


def test_mark_seen_and_move(account: Account) -> None:
    account.create_folder("Processed")
    first = account.deliver(mail("customer_question.eml"))
    second = account.deliver(mail("customer_question_with_attachment.eml"))
    with Session(account.settings()) as imap:
        imap.select("INBOX")
        imap.mark_seen([first])
        imap.move([second], "Processed")
    assert account.flags() == {first: {b"\\Seen"}}
    assert len(account.uids("Processed")) == 1


def test_select_reports_uidvalidity(account: Account) -> None:
    with Session(account.settings()) as imap:
        selected = imap.select("INBOX")
    assert selected.uidvalidity > 0


def test_test_connection_answers_in_words(account: Account) -> None:
    assert "folders" in test_connection(account.settings())
    with pytest.raises(ImapError, match="Wrong username or password"):
        test_connection(account.settings(password="wrong"))
    with pytest.raises(ImapError, match="No such host"):
        test_connection(account.settings(host="no-such-host.invalid"))
    with pytest.raises(ImapError, match="refused the connection"):
        test_connection(account.settings(port=_closed_port()))


def test_a_silent_server_is_a_timeout_in_words() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        settings = ConnectionSettings(
            host="127.0.0.1", port=port, username="u", password="p", security="none", timeout=0.5
        )
        with pytest.raises(ImapError, match=r"No answer from 127\.0\.0\.1:\d+ within 0\.5 seconds"):
            test_connection(settings)
    finally:
        for sock in accepted:
            sock.close()
        listener.close()


def test_ssl_against_a_plain_server_is_a_tls_error_in_words(account: Account) -> None:
    with pytest.raises(ImapError, match="TLS error"):
        test_connection(account.settings(security="ssl"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("security", "port"), [("ssl", "tls_port"), ("starttls", "port")])
def test_tls_checks_the_certificate_and_says_so(account: Account, security: str, port: str) -> None:
    tls = {"security": security, "port": getattr(account.server, port)}
    with pytest.raises(ImapError, match=r"Certificate error.*self-signed"):
        test_connection(account.settings(**tls))
    assert "folders" in test_connection(account.settings(**tls, verify_certificate=False))
    trusted = str(account.server.root / "cert.pem")
    assert "folders" in test_connection(account.settings(**tls, ca_file=trusted))


def test_the_login_mechanism_works_as_well_as_plain(account: Account) -> None:
    assert "folders" in test_connection(account.settings(auth="login"))
