"""A scan commits each message without waiting for the disk, and makes those commits durable
before any flag, move or cursor relies on them: a crash of the database server can only take
back mail that is still unread and behind the cursor (PostgreSQL and Dovecot)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from mailconverter import scanner
from mailconverter.imap import Session
from mailconverter.models import Folder, Mailbox, ScanRun
from mailconverter.workers import BatchDone
from tests.conftest import Org
from tests.mailconverter.conftest import Account
from tests.mailconverter.test_scanner import make_mailbox
from tests.mailconverter.test_workers import in_workers, questions, scanning

__all__ = ["in_workers"]  # the fixture, used by name


def _lsn(function: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def _setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


class Watch:
    """What the log had written when each message's result reached the scan, whether that
    commit had waited for the disk, and what was on disk when the scan flagged or moved the
    cursor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.committed: list[int] = []
        self.settings: list[str] = []
        self.acted: list[tuple[str, int, int]] = []  # (what, log on disk, last commit before)
        real_converted, real_seen = scanner._converted, Session.mark_seen
        real_update = Folder.objects.filter

        def converted(*args: Any) -> Iterator[Any]:
            for item in real_converted(*args):
                if not isinstance(item, BatchDone):  # a message's result
                    self.committed.append(_lsn("pg_current_wal_insert_lsn"))
                    self.settings.append(_setting())
                yield item

        def mark_seen(session: Session, uids: Any) -> None:
            self.acted.append(("flag", _lsn("pg_current_wal_flush_lsn"), max(self.committed)))
            real_seen(session, uids)

        def folder_rows(*args: Any, **kwargs: Any) -> Any:
            if "last_uid__lt" in kwargs and self.committed:  # the cursor moving on
                flushed = _lsn("pg_current_wal_flush_lsn")
                self.acted.append(("cursor", flushed, max(self.committed)))
            return real_update(*args, **kwargs)

        monkeypatch.setattr(scanner, "_converted", converted)
        monkeypatch.setattr(Session, "mark_seen", mark_seen)
        monkeypatch.setattr(Folder.objects, "filter", folder_rows)


def _assert_durable_before_acting(watch: Watch, run: ScanRun) -> None:
    assert run.status == ScanRun.Status.OK, run.error
    assert {what for what, _, _ in watch.acted} == {"flag", "cursor"}
    for what, flushed, committed in watch.acted:
        assert flushed >= committed, f"{what} set before the commits it relies on were on disk"
    assert _setting() == "on"  # the connection serves other work after the scan


@pytest.fixture
def one_process(settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("commits that wait for the disk or not are PostgreSQL's (set DATABASE_URL)")
    settings.CONVERTER_WORKERS = 1


@scanning
def test_one_process_flags_and_moves_the_cursor_only_over_commits_on_disk(
    account: Account, org: Org, one_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = questions(account, 5)
    mailbox = make_mailbox(account, org.admin, after_scan=Mailbox.AfterScan.MARK_READ)
    watch = Watch(monkeypatch)

    run = scanner.scan(mailbox)

    assert watch.settings == ["off"] * 5  # each message's commit did not wait
    _assert_durable_before_acting(watch, run)
    assert account.flags() == {uid: {b"\\Seen"} for uid in uids}
    assert Folder.objects.get(mailbox=mailbox).last_uid == max(uids)


@scanning
def test_workers_commits_are_on_disk_before_the_scan_flags_them(
    account: Account, org: Org, in_workers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = questions(account, 8)
    mailbox = make_mailbox(account, org.admin, after_scan=Mailbox.AfterScan.MARK_READ)
    watch = Watch(monkeypatch)

    run = scanner.scan(mailbox)

    assert in_workers == [2]
    assert len(watch.committed) == 8
    _assert_durable_before_acting(watch, run)
    assert account.flags() == {uid: {b"\\Seen"} for uid in uids}
