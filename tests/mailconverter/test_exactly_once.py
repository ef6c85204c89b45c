"""Exactly once under faults: a described mailbox, every fault we can cause, then the count.

RELIABILITY.md, "The scanner is exactly-once under faults". A generated mailbox is delivered
to Dovecot and described by a MANIFEST (Message-IDs; which are new questions, replies to
which, auto-replies, poison). Then, for a seed:

1. wave one, scanned in this process through the fault proxy (tests/mailconverter/
   faultproxy.py): connections cut mid-FETCH, reset, stalled past a one-second socket
   timeout, at byte positions drawn from the seed;
2. wave two (replies through the ticket number and through In-Reply-To to wave one's
   tickets, more questions, auto-replies, another poison message): `manage.py
   mailconverter_scan` subprocesses SIGKILLed before a message's commit and after a commit
   before its \\Seen (tests/mailconverter/faults_command.py), at seeded message counts; a scan
   in this process during which Dovecot ends its sessions and restarts; UIDVALIDITY changed
   (dovecot-uidlist deleted); two `manage.py mailconverter_scan` processes at once;
3. one clean scan, then scans until the poison mail waits for an administrator, then a scan
   that processes nothing.

Expected figures come from the manifest, never from the code: 0 lost, 0 duplicate tickets,
Messages, links or comments; \\Seen only on mail with a committed ledger row (checked after
every fault, not only at the end); poison mail quarantined with its exact bytes and never
\\Seen; auto-replies make no ticket; at most one IMAP connection to the mailbox at a time.

Poison mail fails for a real reason, not a patch: its subject matches a "drop to Leads" rule
whose owner may see Leads but not create them, so the action raises Forbidden, which the
converter quarantines for an administrator.

The longer soak over many seeds is bench/converter_faults.py, on the same scenario.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection

from crm.email.parse import identity, parse
from crm.models import Comment, Message, MessageLink, Record, User
from crm.services import blobs
from mailconverter import scanner
from mailconverter.imap import ConnectionSettings, ImapError, Session
from mailconverter.models import (
    Folder,
    LedgerEntry,
    Mailbox,
    MailboxLease,
    Outcome,
    QuarantinedMail,
    ScanRun,
)
from tests.conftest import Org
from tests.factories import grant
from tests.mailconverter.conftest import Account, Dovecot
from tests.mailconverter.faultproxy import Fault, FaultProxy, plan, wait_idle
from tests.mailconverter.test_scanner import make_mailbox

pytestmark = [pytest.mark.imap]

ROOT = Path(__file__).resolve().parents[2]
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
# bench/converter_faults.py runs many seeds and collects the figures of each.
SEEDS = [int(s) for s in os.environ.get("CONVERTER_FAULT_SEEDS", "1,2,3").split(",") if s]
REPORT = os.environ.get("CONVERTER_FAULT_REPORT", "")
POISON_MARK = "[to leads]"
RULES: list[dict[str, Any]] = [
    {
        "name": "drop to Leads",
        "conditions": [{"field": "subject", "operator": "contains", "value": POISON_MARK}],
        "actions": [{"type": "link_or_create", "module": "Leads", "by": "sender"}],
    },
    {
        "conditions": [{"field": "subject", "operator": "has_ticket_number"}],
        "actions": [{"type": "update_ticket"}],
    },
    {"conditions": [], "actions": [{"type": "update_ticket"}]},
    {"conditions": [], "actions": [{"type": "create_ticket"}]},
]
FETCH_BATCH = 4  # several FETCH commands and flag batches per scan


# --- the manifest ------------------------------------------------------------------------------


@dataclass
class Mail:
    message_id: str
    kind: str  # "new", "reply", "auto", "poison"
    raw: bytes
    token: str  # text found only in this mail's body
    parent: str = ""  # for a reply: the Message-ID of the question it answers

    @cached_property
    def identity(self) -> str:
        return identity(parse(self.raw), self.raw)


@dataclass
class Manifest:
    seed: int
    mails: list[Mail] = field(default_factory=list)

    def of(self, *kinds: str) -> list[Mail]:
        return [m for m in self.mails if m.kind in kinds]

    def by_id(self, message_id: str) -> Mail:
        return next(m for m in self.mails if m.message_id == message_id)


def _eml(
    seed: int,
    n: int,
    sender: str,
    subject: str,
    body: str,
    *,
    attachment: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    message_id = f"m{n}.s{seed}@customers.example"
    msg = EmailMessage(policy=SMTP)  # CRLF line ends: Dovecot stores the bytes as given
    msg["From"] = f"Customer {n} <{sender}>"
    msg["To"] = "Support <support@crm.test>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename=f"scan-{n}.bin"
        )
    return message_id, msg.as_bytes()


def wave_one(manifest: Manifest, rng: random.Random, questions: int = 16) -> list[Mail]:
    """Questions (a third with an attachment), three auto-replies, one poison message."""
    seed, made = manifest.seed, list[Mail]()
    for i in range(questions):
        n = len(manifest.mails) + len(made)
        token = f"question-{n}-{seed}-{rng.randrange(10**9)}"
        attachment = rng.randbytes(2000) if i % 3 == 0 else b""
        sender = f"c{n}.s{seed}@customers.example"
        mid, raw = _eml(seed, n, sender, f"Question {n}", token, attachment=attachment)
        made.append(Mail(mid, "new", raw, token))
    made += _autos(manifest, len(made), 3)
    made.append(_poison(manifest, len(manifest.mails) + len(made)))
    manifest.mails += made
    return made


def wave_two(manifest: Manifest, numbers: dict[str, str], questions: int = 6) -> list[Mail]:
    """Replies to every other wave-one question (by number or by thread), new questions,
    two auto-replies, one more poison message."""
    seed, made = manifest.seed, list[Mail]()
    for i, parent in enumerate(manifest.of("new")[::2]):
        n = len(manifest.mails) + len(made)
        token = f"reply-{n}-{seed}"
        sender = f"c{parent.message_id.split('.')[0][1:]}.s{seed}@customers.example"
        if i % 2 == 0:
            subject = f"Re: Question - Ticket Id: {numbers[parent.message_id]}"
            mid, raw = _eml(seed, n, sender, subject, token)
        else:
            ref = f"<{parent.message_id}>"
            threading = {"In-Reply-To": ref, "References": ref}
            mid, raw = _eml(seed, n, sender, "Re: thanks", token, headers=threading)
        made.append(Mail(mid, "reply", raw, token, parent.message_id))
    for _ in range(questions):
        n = len(manifest.mails) + len(made)
        token = f"question-{n}-{seed}"
        mid, raw = _eml(seed, n, f"c{n}.s{seed}@customers.example", f"Question {n}", token)
        made.append(Mail(mid, "new", raw, token))
    made += _autos(manifest, len(made), 2)
    made.append(_poison(manifest, len(manifest.mails) + len(made)))
    manifest.mails += made
    return made


def _autos(manifest: Manifest, offset: int, count: int) -> list[Mail]:
    styles = [{"Auto-Submitted": "auto-replied"}, {"X-Autoreply": "yes"}, {"Precedence": "bulk"}]
    made: list[Mail] = []
    for i in range(count):
        n = len(manifest.mails) + offset + i
        token = f"away-{n}-{manifest.seed}"
        sender = f"away{n}.s{manifest.seed}@customers.example"
        mid, raw = _eml(manifest.seed, n, sender, "Out of office", token, headers=styles[i % 3])
        made.append(Mail(mid, "auto", raw, token))
    return made


def _poison(manifest: Manifest, n: int) -> Mail:
    token = f"poison-{n}-{manifest.seed}"
    sender = f"lead{n}.s{manifest.seed}@prospects.example"
    mid, raw = _eml(manifest.seed, n, sender, f"{POISON_MARK} Price list please", token)
    return Mail(mid, "poison", raw, token)


def deliver(account: Account, mails: list[Mail]) -> None:
    with account.client() as client:
        for m in mails:
            client.append("INBOX", m.raw)


# --- what the server and the CRM hold ----------------------------------------------------------


def server_view(account: Account) -> dict[str, set[bytes]]:
    """Message-ID → flags, read directly from Dovecot (not through the proxy)."""
    with account.client() as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        answer = client.fetch(uids, [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    view: dict[str, set[bytes]] = {}
    for data in answer.values():
        header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
        message_id = header.split("<", 1)[1].split(">", 1)[0]
        assert message_id not in view, f"{message_id} twice in the mailbox"
        view[message_id] = set(data[b"FLAGS"]) - {b"\\Recent"}  # which session saw it first
    return view


def ticket_links(message_id: str) -> list[int]:
    return list(
        MessageLink.objects.filter(
            message__message_id=message_id, record__module__name="Tickets"
        ).values_list("record_id", flat=True)
    )


def check_invariants(manifest: Manifest, account: Account) -> None:
    """What must hold after every fault, not only at the end."""
    committed = set(
        LedgerEntry.objects.exclude(outcome=Outcome.FAILED).values_list("identity", flat=True)
    )
    for message_id, flags in server_view(account).items():
        mail = manifest.by_id(message_id)
        if b"\\Seen" in flags:
            assert mail.kind != "poison", f"poison {message_id} marked read"
            assert mail.identity in committed, f"{message_id} read but never committed"
    questions = manifest.of("new")
    for m in questions:
        assert len(ticket_links(m.message_id)) <= 1, f"{m.message_id} on two tickets"
    tickets = Record.objects.filter(module__name="Tickets", deleted_at=None).count()
    assert tickets <= len(questions), "more tickets than questions"
    assert not MessageLink.objects.filter(
        message__message_id__in=[m.message_id for m in manifest.of("auto", "poison")]
    ).exists()


def figures(manifest: Manifest, account: Account) -> dict[str, int]:
    """The count against the manifest, without stopping at the first problem (for the soak).

    lost: a question without its ticket, a reply not on its question's ticket, a poison
    message not quarantined; duplicates: a second ticket, link, Message or comment for one
    email; unsettled: non-poison mail not \\Seen after the clean scan; seen_uncommitted:
    \\Seen on mail without a committed ledger row (poison included).
    """
    view = server_view(account)
    committed = set(
        LedgerEntry.objects.exclude(outcome=Outcome.FAILED).values_list("identity", flat=True)
    )
    count = Counter[str]()
    tickets: dict[str, list[int]] = {
        m.message_id: ticket_links(m.message_id) for m in manifest.mails
    }
    for m in manifest.mails:
        links = tickets[m.message_id]
        stored = Message.objects.filter(message_id=m.message_id).count()
        seen = b"\\Seen" in view.get(m.message_id, set())
        if m.kind == "new":
            count["lost"] += not links or not stored
        elif m.kind == "reply":
            parent = tickets[m.parent][:1]
            count["lost"] += links != parent or not parent
            count["duplicates"] += max(
                0, Comment.objects.filter(body__contains=m.token).count() - 1
            )
        elif m.kind == "poison":
            held = QuarantinedMail.objects.filter(
                entry__identity=m.identity, raw_sha256=hashlib.sha256(m.raw).hexdigest()
            )
            count["lost"] += not held.exists()
        count["duplicates"] += max(0, len(links) - 1) + max(0, stored - 1)
        if m.kind in ("auto", "poison"):
            count["duplicates"] += len(links) + stored  # these make nothing at all
        count["unsettled"] += m.kind != "poison" and not seen
        count["seen_uncommitted"] += seen and (m.kind == "poison" or m.identity not in committed)
    made = Record.objects.filter(module__name="Tickets", deleted_at=None).count()
    count["duplicates"] += max(0, made - len(manifest.of("new")))
    pairs = list(MessageLink.objects.values_list("message_id", "record_id"))
    count["duplicates"] += len(pairs) - len(set(pairs))
    return {
        "messages": len(manifest.mails),
        **{k: count[k] for k in ("lost", "duplicates", "unsettled", "seen_uncommitted")},
    }


def check_final(manifest: Manifest, account: Account) -> None:
    """Everything the manifest expects, once a clean scan has run, one email at a time."""
    check_invariants(manifest, account)
    view = server_view(account)
    assert set(view) == {m.message_id for m in manifest.mails}
    question_ticket: dict[str, int] = {}
    for m in manifest.of("new"):
        links = ticket_links(m.message_id)
        assert len(links) == 1, f"question {m.message_id} on {len(links)} tickets"
        question_ticket[m.message_id] = links[0]
    # One ticket per question and per ticket one question: nothing created from anything else.
    assert len(set(question_ticket.values())) == len(question_ticket)
    assert Record.objects.filter(module__name="Tickets", deleted_at=None).count() == len(
        question_ticket
    )
    for m in manifest.of("reply"):
        assert ticket_links(m.message_id) == [question_ticket[m.parent]], m.message_id
        comments = Comment.objects.filter(body__contains=m.token)
        assert [(c.record_id, c.via_mail) for c in comments] == [
            (question_ticket[m.parent], True)
        ], m.message_id
    for m in manifest.of("new", "reply"):
        assert Message.objects.filter(message_id=m.message_id).count() == 1, m.message_id
        assert view[m.message_id] == {b"\\Seen"}, m.message_id
    for m in manifest.of("auto"):
        assert not Message.objects.filter(message_id=m.message_id).exists(), m.message_id
        assert b"\\Seen" in view[m.message_id], m.message_id  # settled as a loop
    for m in manifest.of("poison"):
        assert not Message.objects.filter(message_id=m.message_id).exists(), m.message_id
        assert b"\\Seen" not in view[m.message_id], m.message_id
        sha = hashlib.sha256(m.raw).hexdigest()
        held = QuarantinedMail.objects.filter(entry__identity=m.identity, resolved_at=None)
        assert held, f"poison {m.message_id} not quarantined"
        for row in held:
            assert row.raw_sha256 == sha
            assert blobs.read(row.raw.name) == m.raw
            assert row.entry.outcome == Outcome.FAILED
            assert "may not create Leads" in row.error
    pairs = list(MessageLink.objects.values_list("message_id", "record_id"))
    assert len(pairs) == len(set(pairs))


# --- scanning: in this process, and as killed subprocesses -------------------------------------


def scan(mailbox: Mailbox, **kwargs: Any) -> ScanRun:
    return scanner.scan(Mailbox.objects.get(pk=mailbox.pk), **kwargs)


def lease_runs_out(mailbox: Mailbox) -> None:
    """A killed scanner's lease expires; here at once instead of after CONVERTER_LEASE_SECONDS."""
    MailboxLease.objects.filter(mailbox=mailbox).update(expires_at=None)


def scanner_env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    url = (
        f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}"
        f"@{db['HOST'] or '127.0.0.1'}"
        f":{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = dict(os.environ)
    env.pop("CONVERTER_FAULT_KILL_AT", None)
    env.update(
        DATABASE_URL=url,
        MEDIA_ROOT=str(django_settings.MEDIA_ROOT),
        CONVERTER_FETCH_BATCH=str(FETCH_BATCH),
        CONVERTER_SENDER_TICKET_LIMIT="1000",
        CONVERTER_MAX_ATTEMPTS=str(django_settings.CONVERTER_MAX_ATTEMPTS),
        CONVERTER_WORKERS=str(django_settings.CONVERTER_WORKERS),
        CONVERTER_WORKERS_FROM=str(django_settings.CONVERTER_WORKERS_FROM),
        **extra,
    )
    return env


def scanner_process(mailbox: Mailbox, kill_at: str = "") -> subprocess.Popen[bytes]:
    """`manage.py mailconverter_scan`; with `kill_at`, through the wrapper that SIGKILLs it."""
    env = scanner_env(**({"CONVERTER_FAULT_KILL_AT": kill_at} if kill_at else {}))
    command = ["-m", "tests.mailconverter.faults_command"] if kill_at else ["manage.py"]
    if not kill_at:
        command.append("mailconverter_scan")
    return subprocess.Popen(  # noqa: S603
        [sys.executable, *command, "--mailbox", mailbox.name],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


# --- the scenario ------------------------------------------------------------------------------


@dataclass
class Run:
    """One seed's run: the manifest and the figures of its faults."""

    manifest: Manifest
    faults: Counter[str] = field(default_factory=Counter)
    figures: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def _tuned(settings: Any, workers: int) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the exactly-once suite needs PostgreSQL (set DATABASE_URL)")
    settings.CONVERTER_FETCH_BATCH = FETCH_BATCH
    settings.CONVERTER_SENDER_TICKET_LIMIT = 1000
    # One process, or conversion workers for every scan, in-process and in subprocesses.
    settings.CONVERTER_WORKERS, settings.CONVERTER_WORKERS_FROM = workers, 1


@pytest.fixture
def owner(org: Org) -> User:
    """May create tickets; may see Leads but not create them (what makes poison mail fail)."""
    grant(org.standard, "Leads", "view")
    return org.alice


@pytest.fixture
def proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.port) as running:
        yield running


def run_scenario(seed: int, account: Account, owner: User, proxy: FaultProxy) -> Run:
    rng = random.Random(seed)
    run = Run(Manifest(seed))
    first = wave_one(run.manifest, rng)
    deliver(account, first)
    # One seed in three reads every new message, the others only unread mail: both cursors
    # under faults (reading all is the dearer: a new UIDVALIDITY makes it read everything again).
    look_for = Mailbox.LookFor.ALL if seed % 3 == 1 else Mailbox.LookFor.UNSEEN
    mailbox = make_mailbox(
        account, owner, rules=RULES, look_for=look_for, connection_options={"timeout": 1}
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(port=proxy.port)  # through the fault proxy

    # 1. Wave one through the proxy: cut, reset or stalled at seeded byte positions.
    size = sum(len(m.raw) for m in first)
    proxy.add(*plan(seed, 5, size, stall=1.5))
    for _ in range(20):  # each scan opens one connection, which takes the next fault
        if not proxy.pending():
            break
        scan(mailbox)
        wait_idle(proxy)
        check_invariants(run.manifest, account)
    assert not proxy.pending()
    run.faults.update(f"proxy {f.kind}" for f in proxy.struck)
    assert proxy.struck, "no planned fault struck"
    # From here on no stalls: a generous timeout, so a busy machine causes no extra faults.
    Mailbox.objects.filter(pk=mailbox.pk).update(connection_options={"timeout": 30})
    assert scan(mailbox).status == ScanRun.Status.OK  # settles wave one
    check_invariants(run.manifest, account)

    # 2. Wave two: replies to wave one's tickets, by number and by thread, and new mail.
    numbers = {
        m.message_id: Record.objects.get(pk=ticket_links(m.message_id)[0]).number
        for m in run.manifest.of("new")
    }
    deliver(account, wave_two(run.manifest, numbers))
    kill_before_commit(run, mailbox, rng.randint(1, 5))
    check_invariants(run.manifest, account)
    kill_after_commit(run, mailbox, account, rng.randint(2, 5))
    check_invariants(run.manifest, account)
    restart_mid_scan(run, mailbox, account, rng.randint(1, FETCH_BATCH))
    wait_idle(proxy)
    check_invariants(run.manifest, account)
    new_uidvalidity_then_two_workers(run, mailbox, account)
    check_invariants(run.manifest, account)

    # 3. The clean scan, then the manifest's count.
    clean = scan(mailbox)
    assert clean.status == ScanRun.Status.OK, clean.error
    assert set(clean.counts) <= {Outcome.FAILED}, clean.counts  # only poison is left to retry
    run.figures = figures(run.manifest, account)
    run.figures["most_connections_at_once"] = proxy.max_open
    if REPORT:
        with open(REPORT, "a") as report:
            mode = "workers" if django_settings.CONVERTER_WORKERS > 1 else "one-process"
            row = {"seed": seed, "mode": mode, **run.figures, "faults": run.faults}
            report.write(json.dumps(row) + "\n")
    return run


def killed(code: int, out: str) -> None:
    """The scanner process died of the SIGKILL; or, converting in workers, a worker did and
    the scan said so and failed."""
    if django_settings.CONVERTER_WORKERS < 2:
        assert code == -signal.SIGKILL, out
    else:
        assert code == 1, out
        assert "conversion worker stopped" in out, out


def kill_before_commit(run: Run, mailbox: Mailbox, n: int) -> None:
    """SIGKILL with the nth message converted inside its transaction, not committed."""
    code, out = finish(scanner_process(mailbox, f"before_commit:{n}"))
    killed(code, out)
    run.faults["kill before commit"] += 1
    # The attempt was counted (committed first); its work was not.
    cut = LedgerEntry.objects.get(outcome=Outcome.FAILED, error__contains="did not finish")
    assert cut.message is None
    assert not cut.records.exists()
    lease_runs_out(mailbox)


def kill_after_commit(run: Run, mailbox: Mailbox, account: Account, n: int) -> None:
    """SIGKILL after the nth message committed, before its \\Seen."""
    code, out = finish(scanner_process(mailbox, f"after_commit:{n}"))
    killed(code, out)
    run.faults["kill after commit"] += 1
    waiting = LedgerEntry.objects.filter(after_scan_pending=True).exclude(outcome=Outcome.FAILED)
    assert waiting.exists(), "the kill came after no commit"
    view = server_view(account)
    by_identity = {m.identity: m.message_id for m in run.manifest.mails}
    assert all(b"\\Seen" not in view[by_identity[e.identity]] for e in waiting)
    lease_runs_out(mailbox)


def restart_mid_scan(run: Run, mailbox: Mailbox, account: Account, at: int) -> None:
    """Dovecot stops and starts again while this scan holds fetched, unflagged messages.

    Dovecot's master leaves running IMAP sessions alone when it restarts (they outlive it):
    the sessions are ended first with `doveadm kick`, as for an upgrade, so the scan loses its
    connection for real.
    """
    server = account.server

    def restart(folder: str, done: int, total: int) -> None:
        if done == at:
            subprocess.run(  # noqa: S603
                [DOVEADM, "-c", str(server.root / "dovecot.conf"), "kick", account.user],
                check=True,
                capture_output=True,
            )
            server.restart()
            run.faults["dovecot restart"] += 1

    interrupted = scan(mailbox, progress=restart)
    assert run.faults["dovecot restart"] == 1, "the scan ended before the restart point"
    assert interrupted.status == ScanRun.Status.FAILED, interrupted.counts
    assert "connection" in interrupted.error


def new_uidvalidity_then_two_workers(run: Run, mailbox: Mailbox, account: Account) -> None:
    """dovecot-uidlist deleted (every UID new), then two scanner processes at once."""
    validity = Folder.objects.get(mailbox=mailbox).uidvalidity
    account.reset_uidvalidity()
    run.faults["uidvalidity changed"] += 1
    workers = [scanner_process(mailbox), scanner_process(mailbox)]
    results = [finish(w) for w in workers]
    assert [code for code, _ in results] == [0, 0], results
    last_two = ScanRun.objects.filter(mailbox=mailbox).order_by("-pk")[:2]
    # The second either found the mailbox busy or started after the first had finished.
    assert sorted(r.status for r in last_two) in (["busy", "ok"], ["ok", "ok"])
    assert Folder.objects.get(mailbox=mailbox).uidvalidity != validity
    run.faults["two workers"] += 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.usefixtures("_tuned")
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers"])
@pytest.mark.parametrize("seed", SEEDS)
def test_every_message_is_converted_exactly_once_whatever_breaks(
    seed: int, workers: int, account: Account, owner: User, proxy: FaultProxy
) -> None:
    run = run_scenario(seed, account, owner, proxy)

    assert run.figures == {
        "messages": len(run.manifest.mails),
        "lost": 0,
        "duplicates": 0,
        "unsettled": 0,
        "seen_uncommitted": 0,
        "most_connections_at_once": 1,
    }, run.faults
    check_final(run.manifest, account)
    # Poison mail is retried until it waits for an administrator; then a scan does nothing.
    mailbox = Mailbox.objects.get()
    for _ in range(django_settings.CONVERTER_MAX_ATTEMPTS):
        assert set(scan(mailbox).counts) <= {Outcome.FAILED}
    assert scan(mailbox).processed == 0
    folder = Folder.objects.get(mailbox=mailbox)
    poison = LedgerEntry.objects.filter(
        folder=folder,
        uidvalidity=folder.uidvalidity or 0,
        identity__in=[m.identity for m in run.manifest.of("poison")],
    )
    assert [e.attempts for e in poison] == [django_settings.CONVERTER_MAX_ATTEMPTS] * 2


# --- the proxy's faults, as an administrator reads them ----------------------------------------


def fetch_all(settings: ConnectionSettings) -> list[bytes]:
    with Session(settings) as imap:
        imap.select("INBOX")
        sizes = imap.sizes(imap.new_uids(0))
        return [raw for _, raw in imap.bodies(list(sizes), sizes, batch=9, batch_bytes=10**6)]


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("cut", "was lost"),
        ("reset", "was cut"),
        ("stall", "No answer from 127.0.0.1"),
    ],
)
def test_each_fault_reaches_the_scanner_as_an_error_in_words(
    kind: str, words: str, account: Account, proxy: FaultProxy
) -> None:
    raws = [_eml(0, n, f"c{n}@customers.example", f"Question {n}", "x" * 5000)[1] for n in (1, 2)]
    deliver(account, [Mail(str(n), "new", raw, "") for n, raw in enumerate(raws)])
    settings = account.settings(port=proxy.port, timeout=1.0)
    assert fetch_all(settings) == raws  # passes: no fault planned

    proxy.add(Fault(kind, after=3000, stall=1.5))  # inside the FETCH answer's first literal
    with pytest.raises(ImapError, match=words):
        fetch_all(settings)
    assert proxy.struck == [Fault(kind, after=3000, stall=1.5)]
    assert proxy.connections == 2


def test_a_fault_switched_on_mid_session_strikes_at_the_next_answer(
    account: Account, proxy: FaultProxy
) -> None:
    deliver(account, [Mail("1", "new", _eml(0, 1, "c1@customers.example", "Hello", "x")[1], "")])
    with Session(account.settings(port=proxy.port, timeout=1.0)) as imap:
        assert imap.select("INBOX").exists == 1
        proxy.switch("reset")
        with pytest.raises(ImapError, match="was cut"):
            imap.new_uids(0)
    assert [f.kind for f in proxy.struck] == ["reset"]
