"""The scan loop: every new message of a mailbox converted once, none lost, none doubled.

ARCHITECTURE.md, "The scan loop", step by step:

1. Take the mailbox's lease (one scan per mailbox across all processes and hosts; a crashed
   holder's lease runs out). Connect with a socket timeout.
2. Per selected folder: SELECT; a changed UIDVALIDITY restarts the cursor (RFC 3501 §2.3.1.1);
   the ledger keeps that from doubling anything. `UID SEARCH UID <last+1>:*` (+ UNSEEN).
3. Sizes first (RFC822.SIZE): an oversize message is quarantined from its header alone.
   Bodies in batches with BODY.PEEK[], which does not set \\Seen; the next batch is fetched
   while the current one is converted (`imap.BodiesAhead`, still one connection).
4. Per message one transaction: the lease is re-checked (fencing: a scan that lost its lease
   cannot commit), the ledger row, ingest, loop guard, rules, actions. Commit, without
   waiting for the disk; before the flags of a batch, one commit that waits makes every
   commit before it durable (`_durable`). Only then, batch by batch, \\Seen or a move, and
   then the cursor. A batch big enough is converted by
   forked worker processes side by side (`mailconverter.workers`, PostgreSQL only): each
   message still in its own transactions, messages that share a sender, a company domain or
   a thread one after the other in UID order, and this process still the only one to fetch,
   flag, move and advance the cursor. A crash between commit and flag
   leaves the ledger row `after_scan_pending`; the next scan of the folder finishes the job
   first. The writes inside take no savepoints: a unique index lost to a concurrent writer
   of the same email fails the transaction, and the message runs once more. After each
   batch, the tables the conversion looks up that have grown a lot since PostgreSQL last
   analyzed them are analyzed (`crm.statistics`), so that a first scan of thousands of
   emails into a new CRM is not planned blind.
5. A message whose processing raises is rolled back and quarantined with its bytes and the
   error; each scan retries it until CONVERTER_MAX_ATTEMPTS, during which the cursor waits
   for it; then it waits for an administrator's retry and the folder goes on.
6. The ledger's `acted` row is unique per email identity, so the same email in two folders or
   two mailboxes runs rules once (PostgreSQL makes the second transaction wait on the unique
   index, then fail, for a concurrent twin; its second run records a duplicate).
7. Every run writes a ScanRun with counts per outcome.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from crm import access, statements, statistics
from crm.email.addresses import is_free_mail, normalise_email
from crm.email.parse import ParsedEmail, identity, ids_and_addresses, parse, summary
from crm.email.sanitize import html_to_text
from crm.models import (
    Attachment,
    Document,
    DocumentLink,
    Message,
    MessageLink,
    Module,
    Record,
    RecordAddress,
    RecordReference,
    User,
)
from crm.services import blobs, ingest
from crm.services import records as record_service
from mailconverter import actions, loops, pec, rules, spam
from mailconverter.imap import BodiesAhead, ConnectionSettings, ImapError, Session
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    MailboxLease,
    Outcome,
    QuarantinedMail,
    Rule,
    ScanRun,
)
from mailconverter.workers import BATCH_DONE, BatchDone, Job, Workers

log = logging.getLogger(__name__)

__all__ = ["LeaseLost", "connection_settings", "facts_of", "open_session", "process", "scan"]

# Outcomes that put the message where processed mail goes, and those for unmatched mail.
PROCESSED = frozenset(
    {Outcome.CREATED, Outcome.UPDATED, Outcome.LINKED, Outcome.IGNORED, Outcome.DUPLICATE}
)
NOT_CONVERTED = frozenset({Outcome.UNMATCHED, Outcome.LOOP, Outcome.BLOCKED})
# What a ledger row says until its message commits: seen later, the worker stopped mid-way.
UNFINISHED = "Processing started and did not finish (the worker stopped?)."
# When several rules apply (stop after match off), the message counts as the strongest.
_STRENGTH: list[str] = [Outcome.CREATED, Outcome.UPDATED, Outcome.LINKED, Outcome.IGNORED]

SessionFactory = Callable[[ConnectionSettings], Session]
Progress = Callable[[str, int, int], None]  # folder, done, total
# The tables a conversion looks rows up in, whose planner statistics a scan keeps current.
LOOKED_UP = (
    Attachment,
    Document,
    DocumentLink,
    LedgerEntry,
    Message,
    MessageLink,
    Record,
    RecordAddress,
    RecordReference,
)


def open_session(connection: ConnectionSettings) -> Session:
    """IMAP, or the local source for `local:` hosts (the sample mailbox): what scans use."""
    from mailconverter import localsource  # it imports this module

    return localsource.session_for(connection)


class LeaseLost(Exception):
    """Another scan holds the mailbox now: this one stops without committing anything more."""


def connection_settings(mailbox: Mailbox) -> ConnectionSettings:
    """How to reach the mailbox; for XOAUTH2 a valid access token, refreshed if need be.

    Raises `oauth2.OAuth2Error` (an ImapError) when no token can be had.
    """
    from mailconverter import oauth2

    options = mailbox.connection_options or {}
    xoauth2 = mailbox.auth == Mailbox.Auth.XOAUTH2
    return ConnectionSettings(
        host=mailbox.host,
        port=mailbox.port,
        username=mailbox.username,
        password=oauth2.access_token(mailbox) if xoauth2 else mailbox.password,
        security=mailbox.security,
        verify_certificate=mailbox.verify_certificate,
        auth=mailbox.auth,
        timeout=float(options.get("timeout", settings.CONVERTER_SOCKET_TIMEOUT)),
        ca_file=str(options.get("ca_file", "")),
    )


# --- the scan ----------------------------------------------------------------------------------


@dataclass
class _Scan:
    mailbox: Mailbox
    owner: User
    token: str | None
    rules: list[rules.Rule]
    own_addresses: frozenset[str]
    ticket_prefix: str
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    progress: Progress | None = None
    should_stop: Callable[[], bool] = lambda: False
    stopped: bool = False
    # Read once per fetch batch (`_fresh_batch`): the blocked senders, and what the actions
    # look up again for every message (modules, their fields, the owner's writable fields).
    blocked: frozenset[str] | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    renewed_at: float = field(default_factory=time.monotonic)  # the lease's last renewal
    workers: Workers | None = None  # conversion workers, forked for a big batch of new mail


def scan(
    mailbox: Mailbox,
    *,
    session_factory: SessionFactory = open_session,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    run: ScanRun | None = None,
) -> ScanRun:
    """Scan every selected folder of the mailbox once; returns the ScanRun written.

    `should_stop` is asked between messages (a SIGTERM handler sets it): the scan then
    finishes the message at hand, flags what committed, moves the cursor and ends.
    `run` is a run queued by "Scan now": it goes QUEUED -> RUNNING -> finished, with progress.
    """
    if run is None:
        run = ScanRun.objects.create(mailbox=mailbox, started_at=timezone.now())
    else:
        run.status, run.started_at = ScanRun.Status.RUNNING, timezone.now()
        run.save(update_fields=["status", "started_at"])
    token = _acquire(mailbox)
    if token is None:
        run.status = ScanRun.Status.BUSY
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
        return run
    ctx = _context(mailbox, token, _RunProgress(run, progress))
    if should_stop is not None:
        ctx.should_stop = should_stop
    try:
        commit_without_waiting()
        with session_factory(connection_settings(mailbox)) as imap:
            for folder in _folders(mailbox):
                if ctx.stopped:
                    break
                try:
                    _scan_folder(ctx, imap, folder)
                except ImapError as exc:
                    ctx.errors.append(f"{folder.name}: {exc}")
                    log.warning("scan of %s/%s stopped: %s", mailbox.name, folder.name, exc)
        run.status = ScanRun.Status.FAILED if ctx.errors else ScanRun.Status.OK
        if ctx.stopped and not ctx.errors:
            run.status = ScanRun.Status.STOPPED
    except (ImapError, LeaseLost) as exc:
        ctx.errors.append(str(exc))
        run.status = ScanRun.Status.FAILED
    except Exception as exc:
        log.exception("scan of %s failed", mailbox.name)
        ctx.errors.append(f"{type(exc).__name__}: {exc}")
        run.status = ScanRun.Status.FAILED
    finally:
        if ctx.workers is not None:
            ctx.workers.close()
        _commit_waiting()
        _release(mailbox, token)
        run.finished_at = timezone.now()
        run.counts = dict(ctx.counts)
        run.error = "\n".join(ctx.errors)[:10_000]
        run.save(update_fields=["finished_at", "counts", "error", "status"])
    return run


class _RunProgress:
    """Writes the run's progress for the page (a cheap UPDATE by pk), at most once a second
    and at each folder's start and end, and passes it on to the caller's progress callback."""

    def __init__(self, run: ScanRun, then: Progress | None) -> None:
        self.run, self.then, self.written_at, self.folder = run, then, 0.0, ""

    def __call__(self, folder: str, done: int, total: int) -> None:
        now = time.monotonic()
        if folder != self.folder or done >= total or now - self.written_at >= 1.0:
            self.folder, self.written_at = folder, now
            ScanRun.objects.filter(pk=self.run.pk).update(folder=folder, done=done, total=total)
        if self.then is not None:
            self.then(folder, done, total)


def _folders(mailbox: Mailbox) -> list[Folder]:
    """Selected folders; Trash, Drafts and Junk (RFC 6154) never, even if a row says so."""
    never = Q()
    for flag in ("\\Trash", "\\Drafts", "\\Junk"):
        never |= Q(special_use__iexact=flag)
    return list(mailbox.folders.filter(selected=True, exists_on_server=True).exclude(never))


def worker_context(mailbox: Mailbox, token: str) -> _Scan:
    """What a conversion worker (mailconverter.workers) reads once for the scan."""
    return _context(mailbox, token, None)


def _context(mailbox: Mailbox, token: str | None, progress: Progress | None) -> _Scan:
    stored = Rule.objects.filter(mailbox=mailbox, enabled=True).order_by("position", "id")
    loaded = []
    for row in stored:
        try:
            loaded.append(
                rules.rule_from_dict(
                    {
                        "conditions": row.conditions,
                        "match": row.match,
                        "actions": row.actions,
                        "stop_after_match": row.stop_after_match,
                        "key": row.pk,
                        "name": row.name,
                    }
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rule %s of %s skipped: %s", row.pk, mailbox.name, exc)
    # Every mailbox's address, and usernames that are addresses, are the CRM's own.
    own = {a.lower() for a in Mailbox.objects.values_list("address", flat=True) if a}
    own |= {u.lower() for u in Mailbox.objects.values_list("username", flat=True) if "@" in u}
    prefix = Module.objects.filter(name=actions.TICKETS).values_list("number_prefix", flat=True)
    return _Scan(
        mailbox=mailbox,
        owner=mailbox.owner,
        token=token,
        rules=loaded,
        own_addresses=frozenset(own),
        ticket_prefix=prefix.first() or rules.DEFAULT_TICKET_PREFIX,
        progress=progress,
    )


def _scan_folder(ctx: _Scan, imap: Session, folder: Folder) -> None:
    selected = imap.select(folder.name)
    if folder.uidvalidity != selected.uidvalidity:
        # RFC 3501 §2.3.1.1: UIDs of another UIDVALIDITY mean nothing; start the cursor over.
        # Mail seen before is recognised by its identity in the ledger, not by its UID.
        folder.uidvalidity, folder.last_uid = selected.uidvalidity, 0
        Folder.objects.filter(pk=folder.pk).update(uidvalidity=selected.uidvalidity, last_uid=0)
    validity = selected.uidvalidity
    _after_scan(ctx, imap, folder, validity, _pending(folder, validity))

    uids = imap.new_uids(
        folder.last_uid, unseen_only=ctx.mailbox.look_for == Mailbox.LookFor.UNSEEN
    )
    settled: dict[int, bool] = {}
    cursor = _Cursor(ctx, folder, validity, uids, settled)
    # A range, not "uid IN (…)": a first scan of a big folder has more UIDs than a query
    # may carry parameters.
    known = {
        e.uid: e
        for e in LedgerEntry.objects.filter(
            folder=folder, uidvalidity=validity, uid__gt=folder.last_uid
        ).only("uid", "outcome", "attempts")
    }
    todo = []
    for uid in uids:
        entry = known.get(uid)
        if entry is None or _retry_due(entry):
            todo.append(uid)
        else:
            settled[uid] = True
    sizes = imap.sizes(todo) if todo else {}
    limit = settings.CONVERTER_MAX_MESSAGE_BYTES
    done = 0
    if ctx.progress:
        ctx.progress(folder.name, done, len(todo))
    for uid in todo:
        if sizes.get(uid, 0) > limit:
            entry = _oversize(ctx, folder, validity, uid, sizes[uid], imap.header(uid))
            settled[uid] = True
            ctx.counts[entry.outcome] += 1
            done += 1
    fetchable = [uid for uid in todo if sizes.get(uid, 0) <= limit and uid in sizes]
    _start_workers(ctx, len(fetchable))  # before the fetch thread: a fork copies no threads
    with BodiesAhead(
        imap,
        fetchable,
        sizes,
        batch=settings.CONVERTER_FETCH_BATCH,
        batch_bytes=settings.CONVERTER_FETCH_BATCH_BYTES,
    ) as bodies:
        flagged: list[LedgerEntry] = []
        # The next batch is fetched while this one is converted.
        for item in _converted(ctx, folder, validity, bodies):
            if isinstance(item, BatchDone):
                bodies.idle()  # the connection is free for the flags
                _after_scan(ctx, imap, folder, validity, flagged)
                cursor.advance()  # a long first scan keeps its place as it goes
                fresh_batch(ctx)
                statistics.refresh(LOOKED_UP)
                flagged = []
                continue
            ctx.counts[item.outcome] += 1
            settled[item.uid] = item.outcome != Outcome.FAILED or _parked(item)
            if item.after_scan_pending:
                flagged.append(item)
            done += 1
            if ctx.progress:
                ctx.progress(folder.name, done, len(todo))
        bodies.idle()  # a scan asked to stop flags what it converted
        _after_scan(ctx, imap, folder, validity, flagged)
    # Messages that vanished between SEARCH and FETCH (expunged by a user) settle as gone.
    for uid in todo:
        settled.setdefault(uid, uid not in sizes)
    cursor.advance()
    spam.move_pending(imap, folder, validity)  # "Mark as spam" moves, queued and committed
    Folder.objects.filter(pk=folder.pk).update(last_scan_at=timezone.now())


def _converted(
    ctx: _Scan, folder: Folder, validity: int, bodies: Iterable[list[tuple[int, bytes]]]
) -> Iterator[LedgerEntry | BatchDone]:
    """The messages converted, each ledger row as it commits (in the workers, in any order),
    and BATCH_DONE once a batch and those before it are. The scan is asked whether to stop
    after each message; then those at hand are finished and no other is started."""
    if ctx.workers is None:
        for group in bodies:
            for uid, raw in group:
                _keep_lease(ctx)
                yield process(ctx.mailbox, folder, validity, uid, raw, scan=ctx)
                if _stopping(ctx):
                    return
            yield BATCH_DONE
        return
    # The workers parse; the scan only reads what decides the order, so that it hands out
    # the next batch without keeping the workers waiting.
    batches = (
        [
            Job(folder.pk, validity, uid, raw, _conflicts(raw, ctx.own_addresses))
            for uid, raw in group
        ]
        for group in bodies
    )
    for item in ctx.workers.convert(batches, stop=lambda: _stopping(ctx)):
        _keep_lease(ctx)
        yield item


def _conflicts(raw: bytes, own: frozenset[str]) -> frozenset[str]:
    """What two messages converted side by side must not share, or the order would change
    what happens: a reply and the message it answers (the update needs the ticket), two
    mails of one sender or one company (one Lead, Contact or Company made, not two)."""
    ids, addresses = ids_and_addresses(raw)
    keys = {f"id:{i}" for i in ids}
    for address in addresses - own:
        keys.add(f"address:{address}")
        domain = address.rpartition("@")[2]
        if not is_free_mail(domain):
            keys.add(f"domain:{domain}")
    return frozenset(keys)


def _stopping(ctx: _Scan) -> bool:
    ctx.stopped = ctx.stopped or ctx.should_stop()
    return ctx.stopped


def _start_workers(ctx: _Scan, messages: int) -> None:
    """Fork the conversion workers for a batch big enough to pay for them, once a scan.

    Only on PostgreSQL (SQLite has one writer), outside a transaction (a worker could not see
    what it holds), and from a process's main thread: a fork from a thread of a threaded web
    server would copy locks that its other threads hold (a scan from "Scan now" without Redis
    converts alone)."""
    wanted = settings.CONVERTER_WORKERS
    if ctx.workers is not None or wanted < 2 or ctx.token is None:
        return
    if messages < settings.CONVERTER_WORKERS_FROM or connection.vendor != "postgresql":
        return
    if connection.in_atomic_block or threading.current_thread() is not threading.main_thread():
        return
    ctx.workers = Workers(ctx.mailbox.pk, ctx.token, wanted)
    commit_without_waiting()  # the scan's connection was closed for the fork


def _retry_due(entry: LedgerEntry) -> bool:
    return entry.outcome == Outcome.FAILED and not _parked(entry)


def _parked(entry: LedgerEntry) -> bool:
    return entry.attempts >= settings.CONVERTER_MAX_ATTEMPTS


class _Cursor:
    """The folder's last UID, moved over the settled prefix of this scan's UIDs (after the
    flags): a message still being retried holds it, the ledger skips what lies beyond."""

    def __init__(
        self,
        ctx: _Scan,
        folder: Folder,
        validity: int,
        uids: Sequence[int],
        settled: dict[int, bool],
    ) -> None:
        self.ctx, self.folder, self.validity = ctx, folder, validity
        self.uids, self.settled = uids, settled
        self.position = 0

    def advance(self) -> None:
        start = self.position
        while self.position < len(self.uids) and self.settled.get(self.uids[self.position]):
            self.position += 1
        if self.position == start:
            return
        _durable(self.ctx)  # the cursor passes only what a crash of the database keeps
        last = self.uids[self.position - 1]
        Folder.objects.filter(
            pk=self.folder.pk, uidvalidity=self.validity, last_uid__lt=last
        ).update(last_uid=last)
        self.folder.last_uid = max(self.folder.last_uid, last)


# --- one message -------------------------------------------------------------------------------


def process(
    mailbox: Mailbox,
    folder: Folder,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    *,
    scan: _Scan | None = None,
) -> LedgerEntry:
    """Convert one message in one transaction; on failure, quarantine it with the error.

    The attempt is counted first, in a transaction of its own: a message that kills the worker
    (out of memory, a hang ended by SIGKILL) rolls back everything else, yet still uses up an
    attempt, and after CONVERTER_MAX_ATTEMPTS it waits for an administrator instead of
    blocking the folder forever. Also the path of an administrator's retry (`scan=None`).
    """
    ctx = scan or _context(mailbox, None, None)
    head = summary(raw)  # the email is parsed whole once the attempt is counted
    key = identity(head, raw)
    started = _start_attempt(ctx, folder, uidvalidity, uid, key, head, raw)
    if started.outcome != Outcome.FAILED:
        return started  # settled meanwhile (a concurrent retry)
    for run in (1, 2):
        try:
            return _transaction(ctx, started, raw, folder)
        except LeaseLost:
            raise
        except IntegrityError as exc:
            if run == 1:
                # A concurrent writer of the same email (a twin in another folder or mailbox,
                # the add-in storing it) won a unique index and has committed: a second run
                # finds its rows. Nested writes take no savepoints; this is their fallback.
                log.info("message %s/%s UID %s runs again: %r", mailbox.name, folder.name, uid, exc)
                continue
            log.warning("message %s/%s UID %s quarantined: %r", mailbox.name, folder.name, uid, exc)
            return _failed(started, raw, exc)
        except Exception as exc:
            log.warning("message %s/%s UID %s quarantined: %r", mailbox.name, folder.name, uid, exc)
            return _failed(started, raw, exc)
    raise AssertionError("unreachable")


def _transaction(ctx: _Scan, started: LedgerEntry, raw: bytes, folder: Folder) -> LedgerEntry:
    """The message's one transaction: lease, ledger row, ingest, rules, actions."""
    with transaction.atomic():
        _fence(ctx)
        entry = _locked(started.pk)
        if entry.outcome != Outcome.FAILED:
            return entry
        entry.rule = None
        if entry.attempts > 1:  # a first attempt has no records to forget
            entry.records.clear()
        with record_service.remembering(ctx.memo):
            _convert(ctx, entry, raw, folder)
        entry.error = ""
        entry.processed_at = timezone.now()
        entry.after_scan_pending = _wants_after_scan(ctx.mailbox, entry.outcome)
        statements.save(entry)
        if entry.attempts > 1:  # only a repeat attempt can have quarantined bytes
            QuarantinedMail.objects.filter(entry=entry, resolved_at=None).update(
                resolved_at=entry.processed_at
            )
    return entry


def _start_attempt(
    ctx: _Scan,
    folder: Folder,
    uidvalidity: int,
    uid: int,
    key: str,
    head: ParsedEmail,
    raw: bytes,
) -> LedgerEntry:
    """Count the attempt and commit it before any work; a repeat attempt keeps the bytes first."""
    now = timezone.now()
    first = _first_attempt(ctx, folder, uidvalidity, uid, key, head, raw)
    if first is not None:
        return first
    with transaction.atomic():
        entry, _ = LedgerEntry.objects.select_for_update().get_or_create(
            mailbox=ctx.mailbox,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=uid,
            defaults=_unfinished(key, head, raw, now),
        )
        if entry.outcome != Outcome.FAILED:
            return entry
        entry.attempts += 1
        entry.error = UNFINISHED
        entry.reason = f"attempt {entry.attempts} of {settings.CONVERTER_MAX_ATTEMPTS}"
        entry.processed_at = now
        entry.save()
        if entry.attempts > 1:  # it failed before, perhaps by killing the worker: keep the bytes
            _quarantine(entry, raw, entry.error)
    return entry


def _first_attempt(
    ctx: _Scan,
    folder: Folder,
    uidvalidity: int,
    uid: int,
    key: str,
    head: ParsedEmail,
    raw: bytes,
) -> LedgerEntry | None:
    """A message never seen: its row, attempt 1 counted, in one INSERT (one round trip and one
    commit instead of five statements). None when the row exists: the locking path decides."""
    now = timezone.now()
    try:
        if not connection.in_atomic_block:
            # Autocommit: the INSERT is its own durable commit, without BEGIN and COMMIT
            # round trips around it.
            return _new_entry(ctx, folder, uidvalidity, uid, key, head, raw, now)
        with transaction.atomic():
            return _new_entry(ctx, folder, uidvalidity, uid, key, head, raw, now)
    except IntegrityError:
        return None


def _new_entry(
    ctx: _Scan,
    folder: Folder,
    uidvalidity: int,
    uid: int,
    key: str,
    head: ParsedEmail,
    raw: bytes,
    now: datetime,
) -> LedgerEntry:
    entry = LedgerEntry(
        mailbox=ctx.mailbox,
        folder=folder,
        uidvalidity=uidvalidity,
        uid=uid,
        **_unfinished(key, head, raw, now),
        attempts=1,
        error=UNFINISHED,
        reason=f"attempt 1 of {settings.CONVERTER_MAX_ATTEMPTS}",
        processed_at=now,
    )
    statements.insert(entry)
    return entry


def _unfinished(key: str, head: ParsedEmail, raw: bytes, now: datetime) -> dict[str, Any]:
    """A ledger row's fields while its message is being converted (failed until it commits)."""
    return {
        "identity": key,
        "outcome": Outcome.FAILED,
        "sender": _sender(head),
        "subject": head.subject[:1000],
        "size": len(raw),
        "created_at": now,
    }


def facts_of(message: Message, folder: str, ticket_prefix: str) -> rules.Facts:
    """What the rules look at in a stored email (the body as text, HTML converted)."""
    body = message.text_body or (html_to_text(message.html_body) if message.html_body else "")
    return rules.Facts(
        sender=(message.from_name, message.from_address),
        to=tuple((a.get("name", ""), a.get("email", "")) for a in message.to),
        cc=tuple((a.get("name", ""), a.get("email", "")) for a in message.cc),
        subject=message.subject,
        body=body,
        folder=folder,
        ticket_prefix=ticket_prefix,
    )


def _convert(ctx: _Scan, entry: LedgerEntry, raw: bytes, folder: Folder) -> None:
    envelope: bytes | None = None
    certified: str | None = None
    if ctx.mailbox.is_pec:
        unwrapped = _pec_view(ctx, entry, raw, folder)
        if unwrapped is None:
            return  # a PEC receipt: settled
        raw, envelope, certified = unwrapped
    sender = entry.sender
    if sender and sender in _blocked(ctx):
        entry.outcome, entry.reason = Outcome.BLOCKED, f"{sender} is blocked on this mailbox"
        return
    parsed = parse(raw)
    automatic = loops.automatic_reason(parsed, own_addresses=ctx.own_addresses)
    if automatic:
        entry.outcome, entry.reason = Outcome.LOOP, automatic[:500]
        return
    if not _claim(entry):
        first = (
            LedgerEntry.objects.filter(identity=entry.identity, acted=True)
            .select_related("mailbox", "folder")
            .first()
        )
        where = f"{first.mailbox.name}/{first.folder.name}" if first else "elsewhere"
        entry.outcome, entry.reason = Outcome.DUPLICATE, f"already converted from {where}"
        return
    stored = ingest.store(
        raw,
        parsed=parsed,
        source=Message.Source.CONVERTER,
        origin=f"{ctx.mailbox.name}/{folder.name} UID {entry.uid}",
    )
    entry.message = stored.message
    message = stored.message
    if envelope is not None:  # the certified envelope, byte for byte (mailconverter.pec)
        entry.message = _store(ctx, entry, envelope, folder)
        ingest.certify(messages=[message, entry.message], certified_id=certified or "")
    facts = facts_of(message, folder.name, ctx.ticket_prefix)
    reasons: list[str] = []
    results: list[actions.ActionResult] = []
    for found in rules.matching_rules(ctx.rules, facts):
        mail = actions.MailContext(
            mailbox=ctx.mailbox,
            owner=ctx.owner,
            message=message,
            body=facts.body,
            own_addresses=ctx.own_addresses,
            capture=found.capture,
            entry=entry,
            memo=ctx.memo,
        )
        deciding, *rest = found.rule.actions or ({"type": "nothing"},)
        result = actions.run(deciding, mail)
        if not result.ok:
            # The first action decides whether the rule applies: "update, else create" works
            # by order.
            reasons.append(f"{found.rule.name or 'rule ' + str(found.rule.key)}: {result.reason}")
            continue
        results.append(result)
        for action in rest:
            extra = actions.run(action, mail)
            if extra.ok:
                results.append(extra)
            elif extra.reason:
                reasons.append(extra.reason)
        if entry.rule_id is None:
            entry.rule_id = found.rule.key
        if found.rule.stop_after_match:
            break
    if not results:
        entry.outcome = Outcome.UNMATCHED
        entry.reason = ("; ".join(reasons) or "no rule matched")[:500]
        return
    entry.outcome = min((r.outcome for r in results), key=_STRENGTH.index)
    entry.reason = "; ".join(r.reason for r in results if r.reason)[:500]
    _add_records(entry, {r.pk: r for result in results for r in result.records}.values())
    if envelope is not None and entry.message is not None:
        _link_all(entry.message, entry.records.all())  # daticert.xml goes where the original did


def _add_records(entry: LedgerEntry, records: Iterable[Record]) -> None:
    """`entry.records.add(*records)`, written out (no m2m signals are listened to)."""
    through = LedgerEntry.records.through
    pairs = [(entry.pk, record.pk) for record in records]
    if not pairs:
        return
    rows = ", ".join(["(%s, %s)"] * len(pairs))
    _execute(
        f"INSERT INTO {statements.table(through)} (ledgerentry_id, record_id) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT DO NOTHING",
        [value for pair in pairs for value in pair],
    )


def _blocked(ctx: _Scan) -> frozenset[str]:
    if ctx.blocked is None:
        found = BlockedSender.objects.filter(mailbox=ctx.mailbox).values_list("address", flat=True)
        ctx.blocked = frozenset(found)
    return ctx.blocked


def fresh_batch(ctx: _Scan) -> None:
    """Forget what was read for the last batch: a sender blocked or a field changed during a
    long scan counts from the next batch on."""
    ctx.blocked = None
    ctx.memo.clear()


def _pec_view(
    ctx: _Scan, entry: LedgerEntry, raw: bytes, folder: Folder
) -> tuple[bytes, bytes | None, str | None] | None:
    """A PEC mailbox's message as the rules should see it (see mailconverter.pec).

    None for a receipt (settled here: kept on the records of the email it is about, if the CRM
    holds that email). An envelope becomes the original it carries, whose identity, sender
    and subject the ledger row takes, with the certified Message-ID; anything else stays as
    it is.
    """
    seen = pec.view(raw)
    if seen.receipt is not None:
        entry.outcome, entry.reason = Outcome.LOOP, seen.reason
        linked = Record.objects.filter(
            message_links__message__message_id=seen.riferimento or "-", deleted_at=None
        ).distinct()
        records = [r for r in linked if access.can(ctx.owner, "edit", r)]
        if records:
            entry.message = _store(ctx, entry, raw, folder)
            _link_all(entry.message, records)
            entry.records.add(*records)
            numbers = ", ".join(r.number or str(r.pk) for r in records)
            entry.reason = f"{seen.reason} for <{seen.riferimento}>, kept on {numbers}"[:500]
        return None
    if seen.original is None or seen.identity is None or seen.head is None:
        return raw, None, None
    entry.identity, entry.sender = seen.identity, _sender(seen.head)
    entry.subject = seen.head.subject[:1000]
    LedgerEntry.objects.filter(pk=entry.pk).update(identity=entry.identity)  # before _claim
    return seen.original, raw, seen.riferimento


def _store(ctx: _Scan, entry: LedgerEntry, raw: bytes, folder: Folder) -> Message:
    origin = f"{ctx.mailbox.name}/{folder.name} UID {entry.uid}"
    return ingest.store(raw, source=Message.Source.CONVERTER, origin=origin).message


def _link_all(message: Message, records: Iterable[Record]) -> None:
    for record in records:
        if record.module.accepts_messages:
            ingest.link(message=message, record=record, actor=None, via=Message.Source.CONVERTER)


def _claim(entry: LedgerEntry) -> bool:
    """Make this row the one that acts on its email; False when another row already did.

    A twin that another scan is converting at this moment makes the UPDATE wait on the unique
    index and, once the twin commits, raise IntegrityError: `process` then runs the message
    again, and this finds the twin (no savepoint on the common path).
    """
    table = connection.ops.quote_name(LedgerEntry._meta.db_table)
    claimed = _execute(
        # Written out: the ORM spends more time building this statement than the database
        # running it, once per message.
        f"UPDATE {table} SET acted = TRUE WHERE id = %s AND NOT EXISTS ("  # noqa: S608
        f"SELECT 1 FROM {table} twin WHERE twin.identity = %s AND twin.acted AND twin.id <> %s)",
        [entry.pk, entry.identity, entry.pk],
    )
    entry.acted = bool(claimed)
    return entry.acted


def _failed(entry: LedgerEntry, raw: bytes, exc: BaseException) -> LedgerEntry:
    """Keep the bytes and the error. Nothing else of the message remains (rolled back)."""
    error = f"{type(exc).__name__}: {exc}"[:10_000]
    with transaction.atomic():
        entry = LedgerEntry.objects.select_for_update().get(pk=entry.pk)
        entry.outcome = Outcome.FAILED
        entry.error = error
        entry.reason = (
            "waiting for an administrator's retry"
            if _parked(entry)
            else f"attempt {entry.attempts} of {settings.CONVERTER_MAX_ATTEMPTS} failed"
        )
        entry.after_scan_pending = False
        entry.processed_at = timezone.now()
        entry.save()
        _quarantine(entry, raw, error)
    return entry


def _quarantine(entry: LedgerEntry, raw: bytes, error: str) -> None:
    name, sha = blobs.put(raw, kind="quarantine")
    now = timezone.now()
    values = {
        "kind": QuarantinedMail.Kind.ERROR,
        "raw": name,
        "raw_sha256": sha,
        "size": len(raw),
        "error": error,
        "updated_at": now,
    }
    QuarantinedMail.objects.update_or_create(
        entry=entry,
        defaults={**values, "resolved_at": None},
        create_defaults={**values, "created_at": now},
    )


def _oversize(
    ctx: _Scan, folder: Folder, uidvalidity: int, uid: int, size: int, header: bytes
) -> LedgerEntry:
    """Record a message over the size limit from its header alone; it stays unread."""
    head = summary(header)
    # Without the body there is no raw-bytes identity: the header stands in for it.
    key = identity(head, header)
    limit = settings.CONVERTER_MAX_MESSAGE_BYTES
    reason = f"{size} bytes, over the limit of {limit} (CONVERTER_MAX_MESSAGE_BYTES)"
    name, sha = blobs.put(header, kind="quarantine")
    now = timezone.now()
    with transaction.atomic():
        _fence(ctx)
        entry, _ = LedgerEntry.objects.update_or_create(
            mailbox=ctx.mailbox,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=uid,
            defaults={"outcome": Outcome.OVERSIZE, "reason": reason, "processed_at": now},
            create_defaults={
                "identity": key,
                "outcome": Outcome.OVERSIZE,
                "reason": reason,
                "sender": _sender(head),
                "subject": head.subject[:1000],
                "size": size,
                "created_at": now,
                "processed_at": now,
            },
        )
        QuarantinedMail.objects.update_or_create(
            entry=entry,
            defaults={"updated_at": now, "error": reason},
            create_defaults={
                "kind": QuarantinedMail.Kind.OVERSIZE,
                "raw": name,
                "raw_sha256": sha,
                "size": len(header),
                "error": reason,
                "created_at": now,
                "updated_at": now,
            },
        )
    return entry


# --- after the commit: \Seen or a move ---------------------------------------------------------


def _wants_after_scan(mailbox: Mailbox, outcome: str) -> bool:
    if mailbox.after_scan == Mailbox.AfterScan.MARK_READ:
        return outcome in PROCESSED or outcome in NOT_CONVERTED
    if mailbox.after_scan == Mailbox.AfterScan.MOVE:
        return bool(_move_target(mailbox, outcome))
    return False


def _move_target(mailbox: Mailbox, outcome: str) -> str:
    if outcome in PROCESSED:
        return mailbox.processed_folder
    if outcome in NOT_CONVERTED:
        return mailbox.unmatched_folder
    return ""


def _pending(folder: Folder, validity: int) -> list[LedgerEntry]:
    return list(
        LedgerEntry.objects.filter(folder=folder, uidvalidity=validity, after_scan_pending=True)
    )


def _after_scan(
    ctx: _Scan, imap: Session, folder: Folder, validity: int, entries: Iterable[LedgerEntry]
) -> None:
    """Flag or move committed messages; only then is the ledger told it is done."""
    entries = [e for e in entries if e.uidvalidity == validity]
    if not entries:
        return
    _durable(ctx)
    mailbox = ctx.mailbox
    if mailbox.after_scan == Mailbox.AfterScan.MARK_READ:
        imap.mark_seen(e.uid for e in entries)
    elif mailbox.after_scan == Mailbox.AfterScan.MOVE:
        by_target: dict[str, list[int]] = {}
        for e in entries:
            target = _move_target(mailbox, e.outcome)
            if target and target != folder.name:
                by_target.setdefault(target, []).append(e.uid)
        for target, uids in by_target.items():
            imap.move(uids, target)
    LedgerEntry.objects.filter(pk__in=[e.pk for e in entries]).update(after_scan_pending=False)


# --- the lease ---------------------------------------------------------------------------------


def _acquire(mailbox: Mailbox) -> str | None:
    """Take the mailbox's lease, or None when a live scan holds it."""
    MailboxLease.objects.get_or_create(mailbox=mailbox)
    token = secrets.token_hex(16)
    now = timezone.now()
    taken = MailboxLease.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__lt=now), mailbox=mailbox
    ).update(token=token, holder=_holder(), expires_at=now + _lease_time())
    return token if taken else None


def _locked(pk: int) -> LedgerEntry:
    """The ledger row, locked until commit: `select_for_update().get(pk=…)`, written out."""
    sql, rows = _locked_statement()
    found = rows.first(sql, [pk])
    if found is None:
        raise LedgerEntry.DoesNotExist(f"no ledger row {pk}")
    return found[0]  # type: ignore[no-any-return]


@functools.cache
def _locked_statement() -> tuple[str, statements.Rows]:
    rows = statements.rows_of((LedgerEntry, "e"))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    table = statements.table(LedgerEntry)
    return f"SELECT {rows.columns} FROM {table} e WHERE e.id = %s{lock}", rows  # noqa: S608


def _fence(ctx: _Scan) -> None:
    """Inside a message's transaction: commit only while this scan holds the lease.

    A shared row lock: the scan's workers fence side by side, and a scan taking an expired
    lease over waits for their commits; every later fence then fails."""
    if ctx.token is None:
        return
    table = connection.ops.quote_name(MailboxLease._meta.db_table)
    lock = " FOR SHARE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE mailbox_id = %s AND token = %s{lock}",  # noqa: S608
            [ctx.mailbox.pk, ctx.token],
        )
        held = cursor.fetchone() is not None
    if not held:
        raise _lease_lost(ctx)


def _keep_lease(ctx: _Scan) -> None:
    """The coordinator's renewal, a tenth of the lease's time after the last one."""
    if ctx.token is None or time.monotonic() - ctx.renewed_at < _lease_time().total_seconds() / 10:
        return
    _renew(ctx)


def _renew(ctx: _Scan) -> None:
    expires = timezone.now() + _lease_time()
    kept = MailboxLease.objects.filter(mailbox=ctx.mailbox, token=ctx.token).update(
        expires_at=expires
    )
    if not kept:
        raise _lease_lost(ctx)
    ctx.renewed_at = time.monotonic()


def _lease_lost(ctx: _Scan) -> LeaseLost:
    return LeaseLost(f"the lease on {ctx.mailbox.name} was taken over by another scan")


def _release(mailbox: Mailbox, token: str) -> None:
    MailboxLease.objects.filter(mailbox=mailbox, token=token).update(
        token="", holder="", expires_at=None
    )


def _lease_time() -> timedelta:
    return timedelta(seconds=settings.CONVERTER_LEASE_SECONDS)


def _holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"[:255]


# --- durability --------------------------------------------------------------------------------


def commit_without_waiting() -> None:
    """A scan's commits stop waiting for the disk (PostgreSQL's `synchronous_commit` off, for
    this connection): the scan and its workers commit message after message, and `_durable`
    makes the commits durable together before anything outside the database relies on them.

    Such a commit is atomic and seen by every other connection at once, like any other. Only a
    crash of the database server can lose it, and only while no flag, move or cursor has yet
    acted on it: the next scan then finds that mail unread and unconverted, and converts it.
    """
    if connection.vendor == "postgresql":
        _execute("SET synchronous_commit TO OFF", [])


def _commit_waiting() -> None:
    """The connection's commits wait for the disk again (a connection from a web server's
    thread or a Celery worker serves other work after the scan)."""
    if connection.vendor == "postgresql":
        _execute("RESET synchronous_commit", [])


def _durable(ctx: _Scan) -> None:
    """Before a flag, a move or the cursor acts on converted mail: wait until every commit
    made so far, by this scan and by its workers, is on disk.

    The lease's renewal is committed waiting for the disk, and PostgreSQL writes its log in
    order: waiting for one commit waits for every commit before it. The workers' commits come
    before it, since their results reached the scan after they committed.
    """
    if connection.vendor != "postgresql" or ctx.token is None:
        return
    with transaction.atomic():
        _execute("SET LOCAL synchronous_commit TO ON", [])
        _renew(ctx)


# --- helpers -----------------------------------------------------------------------------------


def _execute(sql: str, params: list[Any]) -> int:
    """Run one statement written out for the per-message path; the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def _sender(head: ParsedEmail) -> str:
    if head.from_ is None:
        return ""
    return (normalise_email(head.from_.email) or head.from_.email)[:320]
