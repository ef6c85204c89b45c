"""Mailbox operations an administrator starts: save, delete, test the connection, refresh
folders, scan now, retry.

Thin callers (pages, commands) call these; the scan itself is `mailconverter.scanner.scan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from crm.email.addresses import normalise_email
from crm.email.parse import ParsedEmail, identity, parse
from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import Field, Message, Record, User
from crm.models.modules import FieldType
from crm.services import blobs, ingest
from mailconverter import (
    actions,
    imap,
    localsource,
    loops,
    oauth2,
    rules,
    scanner,
    schedule,
    secrets,
    spam,
)
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    MailboxLease,
    MailboxSmtp,
    Outcome,
    QuarantinedMail,
    Rule,
    ScanRun,
    SpamMark,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str  # in words, for the page


def test_connection(mailbox: Mailbox) -> ConnectionCheck:
    try:
        connection = scanner.connection_settings(mailbox)
        if not connection.host.startswith(localsource.PREFIX):
            return ConnectionCheck(True, imap.test_connection(connection))
        with scanner.open_session(connection) as session:  # the sample's directory
            count = session.status(localsource.INBOX)[0]
        return ConnectionCheck(True, f"Read {connection.host}: {count} emails in one folder.")
    except imap.ImapError as exc:
        return ConnectionCheck(False, str(exc))


test_connection.__test__ = False  # type: ignore[attr-defined]


def refresh_folders(mailbox: Mailbox) -> list[Folder]:
    """The server's folders with their counts; a folder gone from the server stays, marked.

    Trash, Drafts and Junk are listed but never selectable for scanning.
    """
    with scanner.open_session(scanner.connection_settings(mailbox)) as session:
        listed = [f for f in session.folders() if f.selectable]
        counts = {f.name: session.status(f.name) for f in listed}
    names = {f.name for f in listed}
    with transaction.atomic():
        for info in listed:
            messages, unseen = counts[info.name]
            folder, _ = Folder.objects.update_or_create(
                mailbox=mailbox,
                name=info.name,
                defaults={
                    "special_use": info.special_use,
                    "message_count": messages,
                    "unseen_count": unseen,
                    "exists_on_server": True,
                },
            )
            if not info.scannable and folder.selected:
                Folder.objects.filter(pk=folder.pk).update(selected=False)
        Folder.objects.filter(mailbox=mailbox).exclude(name__in=names).update(
            exists_on_server=False
        )
    return list(Folder.objects.filter(mailbox=mailbox, exists_on_server=True))


def retry(*, actor: User, entry: LedgerEntry) -> LedgerEntry:
    """An administrator's retry of a quarantined message, from its stored bytes.

    On success the ledger row is settled and the quarantine resolved; marking it read or moving
    it on the server follows on the folder's next scan (it needs the IMAP session).
    """
    if not actor.is_superuser:
        raise Forbidden("Only administrators retry quarantined mail.")
    if entry.outcome != Outcome.FAILED:
        raise Invalid("Only failed messages can be retried.", code="not_failed")
    held = QuarantinedMail.objects.filter(entry=entry).first()
    if held is None or held.kind != QuarantinedMail.Kind.ERROR:
        raise Invalid("There are no stored bytes to retry.", code="no_bytes")
    raw = blobs.read(held.raw.name)
    QuarantinedMail.objects.filter(pk=held.pk).update(updated_at=timezone.now())
    return scanner.process(entry.mailbox, entry.folder, entry.uidvalidity, entry.uid, raw)


def rotate_secrets() -> int:
    """Re-encrypt every mailbox secret (passwords, "info" SMTP passwords, OAuth2 tokens) with
    the first FIELD_ENCRYPTION_KEY (`manage.py rotate_secrets` runs this and crm's own).

    Rotation: put the new key first in the setting (keep the old one after it), run this, then
    drop the old key. Returns how many secrets were rewritten.
    """
    rotated = 0
    with transaction.atomic():
        for pk, token in (
            Mailbox.objects.select_for_update().exclude(secret="").values_list("pk", "secret")
        ):
            Mailbox.objects.filter(pk=pk).update(secret=secrets.rotate(token))
            rotated += 1
        for pk, token in (
            MailboxSmtp.objects.select_for_update().exclude(secret="").values_list("pk", "secret")
        ):
            MailboxSmtp.objects.filter(pk=pk).update(secret=secrets.rotate(token))
            rotated += 1
    return rotated + _rotate_oauth2_secrets()


# --- mailbox changes and scans ------------------------------------------------------------------


def _require_admin(actor: User, doing: str) -> None:
    if not actor.is_superuser:
        raise Forbidden(f"Only administrators {doing}.")


def save_mailbox(
    *,
    actor: User,
    mailbox: Mailbox,
    password: str | None = None,
    oauth2: OAuth2Grant | None = None,
) -> Mailbox:
    """Create or change a mailbox and keep its periodic scan in step, in one transaction.

    `password` None or "" keeps the stored secret (a form leaves the field empty to keep it).
    `oauth2`, for a mailbox signing in with XOAUTH2, is checked first and saved with it.
    A new server or username keeps the folders and the ledger: they are never reset, so mail
    already converted is recognised by its identity and never converted twice. The beat entry
    is written in the same transaction (it lives in the same database), so a mailbox and its
    schedule never disagree; `schedule.sync_all` repairs one edited behind our back.
    """
    _require_admin(actor, "change mailboxes")
    if password:
        mailbox.set_password(password)
    try:
        mailbox.full_clean(exclude=["secret"])
    except ValidationError as exc:
        raise Invalid(
            fields={k: " ".join(v) for k, v in exc.message_dict.items()}, code="invalid_mailbox"
        ) from exc
    if oauth2 is not None:
        _check_oauth2(mailbox, oauth2)
    with transaction.atomic():
        mailbox.save()
        if oauth2 is not None:
            _apply_oauth2(mailbox, oauth2)
        schedule.sync(mailbox)
    return mailbox


def delete_mailbox(*, actor: User, mailbox: Mailbox) -> None:
    """Delete a mailbox with its rules, folders, ledger and runs, and its periodic scan.

    Records, messages and documents it created stay: they belong to the CRM.
    """
    _require_admin(actor, "delete mailboxes")
    with transaction.atomic():
        schedule.remove(mailbox.pk)
        mailbox.delete()


# A queued run older than this never reached a worker (none running, or the broker lost it).
QUEUED_STALE_AFTER_SECONDS = 3600
_ACTIVE = (ScanRun.Status.QUEUED, ScanRun.Status.RUNNING)


def scan_now(*, actor: User, mailbox: Mailbox) -> ScanRun:
    """Queue a scan of the mailbox now and return its run, to follow with `run_status`.

    If a scan of this mailbox is already queued or running, that run is returned instead of
    queuing another (pressing the button twice makes one scan). The run row exists before the
    task is sent, so the page can show "queued" at once; the task is sent only on commit.
    """
    _require_admin(actor, "start scans")
    if not mailbox.enabled:
        raise Invalid("The mailbox is disabled: enable it to scan it.", code="mailbox_disabled")
    with transaction.atomic():
        # One "scan now" at a time per mailbox: the row lock orders concurrent presses.
        Mailbox.objects.select_for_update().filter(pk=mailbox.pk).first()
        active = _active_run(mailbox)
        if active is not None:
            return active
        run = ScanRun.objects.create(
            mailbox=mailbox, started_at=timezone.now(), status=ScanRun.Status.QUEUED
        )
        transaction.on_commit(lambda: _enqueue_scan(mailbox.pk, run.pk))
    return run


def _enqueue_scan(mailbox_id: int, run_id: int) -> None:
    from mailconverter.tasks import scan_mailbox  # the task module imports this one

    scan_mailbox.delay(mailbox_id, run_id)


def _active_run(mailbox: Mailbox) -> ScanRun | None:
    """The live queued or running run of the mailbox; runs left behind are closed as failed.

    A running run is live while a scan holds the mailbox's lease (a crashed worker's lease runs
    out); a queued one for an hour.
    """
    now = timezone.now()
    lease_live = _scan_in_progress(mailbox)
    for run in ScanRun.objects.filter(mailbox=mailbox, status__in=_ACTIVE).order_by("-pk"):
        queued_live = (now - run.started_at).total_seconds() < QUEUED_STALE_AFTER_SECONDS
        if (run.status == ScanRun.Status.RUNNING and lease_live) or (
            run.status == ScanRun.Status.QUEUED and queued_live
        ):
            return run
        ScanRun.objects.filter(pk=run.pk, status=run.status).update(
            status=ScanRun.Status.FAILED,
            finished_at=now,
            error="The scan ended without reporting back (its worker stopped).",
        )
    return None


def _scan_in_progress(mailbox: Mailbox) -> bool:
    return MailboxLease.objects.filter(
        mailbox=mailbox, expires_at__gt=timezone.now(), token__gt=""
    ).exists()


def run_scan(
    *, mailbox_id: int, run_id: int | None = None, should_stop: Callable[[], bool] | None = None
) -> ScanRun | None:
    """What the scan task does: scan an enabled mailbox, into the queued run if there is one.

    A missing or disabled mailbox ends it (logged; a queued run is closed with the reason).
    A run that already finished is not scanned again: the broker delivered its task twice.
    A run already running was delivered twice too (acks_late, a scan longer than the broker's
    visibility timeout): while its scan goes on, this delivery gets a run of its own (which
    ends busy); if its worker died, this delivery takes the run over and finishes it.
    """
    run = ScanRun.objects.filter(pk=run_id).first() if run_id is not None else None
    mailbox = Mailbox.objects.filter(pk=mailbox_id).select_related("owner").first()
    if mailbox is None or not mailbox.enabled:
        why = "no longer exists" if mailbox is None else "is disabled"
        log.info("scan of mailbox %s skipped: it %s", mailbox_id, why)
        if run is not None and run.status in _ACTIVE:
            ScanRun.objects.filter(pk=run.pk).update(
                status=ScanRun.Status.FAILED,
                finished_at=timezone.now(),
                error=f"The mailbox {why}.",
            )
        return None
    if run is not None and run.status not in _ACTIVE:
        log.info("scan run %s already ended (%s); not scanned again", run.pk, run.status)
        return run
    if run is not None and run.status == ScanRun.Status.RUNNING and _scan_in_progress(mailbox):
        run = None
    return scanner.scan(mailbox, run=run, should_stop=should_stop)


def run_status(run: ScanRun) -> dict[str, Any]:
    """A run as the page shows it while it goes: plain values, ready for JSON or a template.

    `finished` is false while queued or running (the page keeps polling); `done`/`total` are
    the messages of the folder being scanned.
    """
    run.refresh_from_db()
    return {
        "id": run.pk,
        "status": run.status,
        "label": run.get_status_display(),
        "folder": run.folder,
        "done": run.done,
        "total": run.total,
        "counts": dict(run.counts),
        "processed": run.processed,
        "error": run.error,
        "finished": run.status not in _ACTIVE,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


# --- the settings pages: folders, rules, blocked senders, rule preview ----------------------------


def select_folders(*, actor: User, mailbox: Mailbox, names: Iterable[str]) -> list[Folder]:
    """Scan exactly the ticked folders. Trash, Drafts and Junk are never selectable, and a name
    the server no longer lists is refused, so a stale page cannot tick what is not there."""
    _require_admin(actor, "choose folders to scan")
    wanted = set(names)
    with transaction.atomic():
        folders = list(Folder.objects.select_for_update().filter(mailbox=mailbox))
        by_name = {f.name: f for f in folders if f.exists_on_server}
        unknown = sorted(wanted - set(by_name))
        if unknown:
            raise Invalid(
                fields={"folders": f"The server does not list {', '.join(unknown)}."},
                code="unknown_folder",
            )
        refused = sorted(n for n in wanted if not folder_scannable(by_name[n]))
        if refused:
            raise Invalid(
                fields={"folders": f"{', '.join(refused)} is never scanned (trash, drafts, junk)."},
                code="unscannable_folder",
            )
        Folder.objects.filter(mailbox=mailbox).update(selected=False)
        Folder.objects.filter(mailbox=mailbox, name__in=wanted).update(selected=True)
    return list(Folder.objects.filter(mailbox=mailbox, exists_on_server=True))


_NEVER_SCANNED = frozenset({"\\trash", "\\drafts", "\\junk"})


def folder_scannable(folder: Folder) -> bool:
    """RFC 6154 special use: what the scan skips (`scanner._folders`) cannot be ticked."""
    return folder.special_use.lower() not in _NEVER_SCANNED


@dataclass(frozen=True)
class RuleInput:
    """A rule as the form sends it; `conditions` and `actions` as stored (see models.Rule)."""

    name: str
    enabled: bool
    match: str
    conditions: list[dict[str, str]]
    actions: list[dict[str, Any]]
    stop_after_match: bool


def save_rule(*, actor: User, mailbox: Mailbox, rule: Rule | None, data: RuleInput) -> Rule:
    """Create (rule None: placed last) or change a rule, refusing what the scan could not run.

    Errors name the row: `conditions.2`, `actions.0`, so the form shows each next to its row.
    """
    _require_admin(actor, "change rules")
    if rule is not None and rule.mailbox_id != mailbox.pk:
        raise NotFound("No such rule.")
    problems = {f"conditions.{i}": m for i, m in rules.validate(data.conditions).items()}
    problems |= {f"actions.{i}": m for i, m in actions.validate(data.actions).items()}
    if data.match not in (Rule.Match.ALL, Rule.Match.ANY):
        problems["match"] = "Choose all or any."
    if len(data.name) > Rule._meta.get_field("name").max_length:  # type: ignore[operator]
        problems["name"] = "Keep the name under 200 characters."
    problems |= _ticket_value_problems(data.actions)
    if not problems:
        try:
            rules.rule_from_dict({"conditions": data.conditions, "actions": data.actions})
        except (ValueError, KeyError, TypeError) as exc:
            problems["conditions"] = f"This rule cannot be run: {exc}."
    if problems:
        raise Invalid("The rule has mistakes.", fields=problems, code="invalid_rule")
    with transaction.atomic():
        if rule is None:
            last = Rule.objects.filter(mailbox=mailbox).aggregate(m=Max("position"))["m"]
            rule = Rule(mailbox=mailbox, position=0 if last is None else last + 1)
        rule.name = data.name.strip()
        rule.enabled = data.enabled
        rule.match = data.match
        rule.conditions = data.conditions
        rule.actions = data.actions
        rule.stop_after_match = data.stop_after_match
        rule.save()
    return rule


def ticket_choices() -> dict[str, list[str]]:
    """The Tickets module's picklist values an action may set: {"status": [...], ...}."""
    fields = Field.objects.filter(
        module__name=actions.TICKETS, name__in=("status", "priority"), type=FieldType.PICKLIST
    )
    return {f.name: [str(c) for c in f.choices or []] for f in fields}


def _ticket_value_problems(listed: list[dict[str, Any]]) -> dict[str, str]:
    """A status or priority the Tickets module does not have would fail every message."""
    choices = ticket_choices()
    problems: dict[str, str] = {}
    for index, action in enumerate(listed):
        for name in ("status", "priority"):
            value = action.get(name)
            allowed = choices.get(name)
            if value and allowed is not None and value not in allowed:
                problems[f"actions.{index}"] = f"Tickets have no {name} “{value}”."
    return problems


def delete_rule(*, actor: User, rule: Rule) -> None:
    _require_admin(actor, "delete rules")
    with transaction.atomic():
        mailbox = rule.mailbox
        rule.delete()
        _renumber(mailbox)


def move_rule(*, actor: User, rule: Rule, direction: str) -> Rule:
    """One place up (earlier, tried first) or down; the ends stay where they are."""
    _require_admin(actor, "reorder rules")
    if direction not in ("up", "down"):
        raise Invalid(fields={"direction": "Move a rule up or down."}, code="bad_direction")
    with transaction.atomic():
        ordered = _renumber(rule.mailbox)
        index = next(i for i, r in enumerate(ordered) if r.pk == rule.pk)
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(ordered):
            ordered[index], ordered[other] = ordered[other], ordered[index]
            for position, row in enumerate(ordered):
                Rule.objects.filter(pk=row.pk).update(position=position)
    rule.refresh_from_db()
    return rule


def _renumber(mailbox: Mailbox) -> list[Rule]:
    """Positions 0..n-1 in the order the scan tries them (position, then id)."""
    ordered = list(
        Rule.objects.select_for_update().filter(mailbox=mailbox).order_by("position", "id")
    )
    for position, row in enumerate(ordered):
        if row.position != position:
            Rule.objects.filter(pk=row.pk).update(position=position)
            row.position = position
    return ordered


def block_sender(*, actor: User, mailbox: Mailbox, address: str, reason: str = "") -> BlockedSender:
    """Mail from this address to this mailbox is skipped (and recorded as blocked) from now on."""
    _require_admin(actor, "block senders")
    normal = normalise_email(address.strip())
    if not normal:
        raise Invalid(fields={"address": "Enter an email address."}, code="bad_address")
    blocked, _ = BlockedSender.objects.get_or_create(
        mailbox=mailbox,
        address=normal[:320],
        defaults={"reason": reason.strip()[:255], "created_at": timezone.now()},
    )
    return blocked


def unblock_sender(*, actor: User, blocked: BlockedSender) -> None:
    _require_admin(actor, "unblock senders")
    blocked.delete()


@dataclass(frozen=True)
class PreviewStep:
    """One matching rule, and what its actions would do."""

    rule: str  # its name, or "rule N"
    conditions: str  # "every message", or the conditions in words
    applies: bool  # its first action would succeed
    does: list[str]  # the actions in words, the deciding one first
    why_not: str = ""  # when it does not apply: why, and that the next rule would be tried


@dataclass(frozen=True)
class Preview:
    """What a scan would do with one email, decided without doing it."""

    subject: str
    sender: str
    skipped: str  # why the scan would skip it before any rule (blocked, automatic, converted)
    steps: list[PreviewStep]
    verdict: str  # one sentence: the outcome

    @property
    def deciding(self) -> PreviewStep | None:
        return next((s for s in self.steps if s.applies), None)


def preview_rules(*, actor: User, mailbox: Mailbox, raw: bytes, folder: str = "INBOX") -> Preview:
    """Which rule would apply to this email and what it would do, without doing any of it.

    Read-only: the email is parsed, not stored; the look-ups (a ticket by number, a contact by
    address) are the actions' own, as the mailbox's owner; and everything runs in a transaction
    that is rolled back, so even a look-up that wrote something would leave no trace.
    """
    _require_admin(actor, "test rules")
    if not raw.strip():
        raise Invalid(fields={"raw": "Paste an email or choose an .eml file."}, code="empty")
    if len(raw) > settings.CONVERTER_MAX_MESSAGE_BYTES:
        raise Invalid(
            fields={"raw": "This email is over the size limit: the scan would quarantine it."},
            code="too_large",
        )
    with transaction.atomic():
        try:
            return _preview(mailbox, raw, folder)
        finally:
            transaction.set_rollback(True)


def _preview(mailbox: Mailbox, raw: bytes, folder: str) -> Preview:
    parsed = parse(raw)
    fields = ingest._headers(parsed)
    sender = (normalise_email(fields["from_address"]) or fields["from_address"])[:320]
    # The scan's own set-up (enabled rules in order, the CRM's own addresses, ticket prefix).
    ctx = scanner._context(mailbox, None, None)
    skipped = _skipped(mailbox, parsed, raw, sender, ctx.own_addresses)
    key = identity(parsed, raw)
    # A stand-in Message, never saved: the email as the actions would see it once stored. An id
    # that no row has keeps "not this message itself" filters working; a stored copy is used.
    message = Message.objects.filter(identity=key).first() or Message(pk=0, **fields)
    facts = scanner.facts_of(message, folder, ctx.ticket_prefix)
    steps: list[PreviewStep] = []
    for found in rules.matching_rules(ctx.rules, facts):
        mail = actions.MailContext(
            mailbox=mailbox,
            owner=ctx.owner,
            message=message,
            body=facts.body,
            own_addresses=ctx.own_addresses,
            capture=found.capture,
        )
        step = _preview_step(found, mail)
        steps.append(step)
        if step.applies and found.rule.stop_after_match:
            break
    return Preview(
        subject=parsed.subject,
        sender=sender,
        skipped=skipped,
        steps=steps,
        verdict=_verdict(skipped, steps),
    )


def _skipped(
    mailbox: Mailbox, parsed: ParsedEmail, raw: bytes, sender: str, own: frozenset[str]
) -> str:
    """The scan's checks before the rules, in its order (`scanner._convert`)."""
    if sender and BlockedSender.objects.filter(mailbox=mailbox, address=sender).exists():
        return f"{sender} is blocked on this mailbox."
    automatic = loops.automatic_reason(parsed, own_addresses=own)
    if automatic:
        return f"Automatic mail, never converted: {automatic}."
    done = (
        LedgerEntry.objects.filter(identity=identity(parsed, raw), acted=True)
        .select_related("mailbox", "folder")
        .first()
    )
    if done is not None:
        return f"Already converted from {done.mailbox.name}/{done.folder.name}."
    return ""


def _preview_step(found: rules.RuleMatch, mail: actions.MailContext) -> PreviewStep:
    rule = found.rule
    name = rule.name or f"rule {rule.key}"
    listed = list(rule.actions) or [{"type": "nothing"}]
    ok, words = _describe_action(listed[0], mail)
    does = [words] + [_describe_action(a, mail)[1] for a in listed[1:]]
    return PreviewStep(
        rule=name,
        conditions=rules.describe(rule),
        applies=ok,
        does=does,
        why_not="" if ok else f"{words}: the next rule would be tried",
    )


def _describe_action(action: Mapping[str, Any], mail: actions.MailContext) -> tuple[bool, str]:
    """Would this action succeed, and what it would do, in words (look-ups only)."""
    kind = action.get("type")
    if kind == "create_ticket":
        return _describe_create_ticket(action, mail)
    if kind == "update_ticket":
        ticket, how = actions._find_ticket(mail)
        if ticket is None:
            return False, how[:1].upper() + how[1:]
        status = action.get("status") or actions.STATUS_ANSWERED
        found_by = _FOUND_BY.get(how.partition(" from ")[2], how)
        return True, (
            f"update ticket {ticket.number} “{ticket.label}” (found by {found_by}): "
            f"the email becomes a customer comment, status “{status}”"
        )
    if kind in ("link", "link_or_create"):
        return _describe_link(action, mail, create=kind == "link_or_create")
    if kind == "nothing":
        return True, "do nothing (the email is recorded as ignored by a rule)"
    return False, f"Unknown action {kind!r}"


# How `actions._find_ticket` found the ticket, in an administrator's words.
_FOUND_BY = {
    "the rule's capture": "the number the rule's condition found",
    "the subject": "the number in the subject",
    "Ticket Id in the body": "“Ticket Id” in the body",
    "In-Reply-To/References": "the email it answers",
}


def _describe_create_ticket(
    action: Mapping[str, Any], mail: actions.MailContext
) -> tuple[bool, str]:
    sender = mail.message.from_address
    limited = actions._over_sender_limit(sender)
    if limited:
        return False, limited[:1].upper() + limited[1:]
    owner = mail.owner
    contact = actions._first(actions._by_address(owner, actions.CONTACTS, [sender]))
    company = actions._company_of(owner, contact) if contact is not None else None
    if company is None:
        company = actions._first(
            actions._by_address(owner, actions.COMPANIES, [sender], domains=True)
        )
    words = f"create a ticket titled “{actions._title(mail.message.subject)}”"
    if contact is not None:
        words += f" for Contact {contact.label}"
    if company is not None:
        words += f"{' at' if contact is not None else ' for'} Company {company.label}"
    if contact is None and company is None:
        if action.get("create_lead"):
            lead = actions._first(actions._by_address(owner, actions.LEADS, [sender]))
            words += (
                f" for Lead {lead.label}" if lead else f", and create a Lead for {sender} then link"
            )
        else:
            words += " with no contact (nobody in the CRM has this address)"
    return True, words


def _describe_link(
    action: Mapping[str, Any], mail: actions.MailContext, *, create: bool
) -> tuple[bool, str]:
    module_name, addresses = actions._link_target(action, mail)
    if module_name is None:
        return False, f"Cannot link to {action.get('module')!r}"
    found = actions._by_address(
        mail.owner, module_name, addresses, domains=module_name == actions.COMPANIES
    )
    singular = actions._module(module_name).singular
    if found:
        return True, "link to " + ", ".join(f"{singular} {r.label}" for r in found)
    if create and addresses:
        return True, f"create a {singular} for {', '.join(addresses)} then link"
    return False, f"No {module_name} for {', '.join(addresses) or 'these addresses'}"


def _verdict(skipped: str, steps: list[PreviewStep]) -> str:
    if skipped:
        return f"The scan would skip this email: {skipped}"
    deciding = next((s for s in steps if s.applies), None)
    if deciding is None:
        if steps:
            return "No rule would apply: the email would be recorded as unmatched."
        return "No rule matches: the email would be recorded as unmatched."
    return f"{deciding.rule} would apply: {deciding.does[0]}."


# --- OAuth2 (XOAUTH2) sign-in ------------------------------------------------------------------

_OAUTH2_SECRETS = ("oauth2_client_secret", "oauth2_refresh_token", "oauth2_access_token")


@dataclass(frozen=True)
class OAuth2Grant:
    """How a mailbox signs in with OAuth2 (XOAUTH2): the app registration and a refresh token.

    A blank `client_secret` or `refresh_token` keeps the stored one (the page never shows them
    back).
    """

    token_endpoint: str
    client_id: str
    client_secret: str = ""
    refresh_token: str = ""
    scope: str = ""


def set_oauth2(
    *,
    actor: User,
    mailbox: Mailbox,
    token_endpoint: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    scope: str = "",
) -> Mailbox:
    """Sign the mailbox in with OAuth2 (XOAUTH2).

    The stored access token is dropped: it belongs to the previous grant, and the next
    connection gets one with the new refresh token, so a wrong one shows at "Test connection".
    """
    if not actor.is_superuser:
        raise Forbidden("Only administrators change how a mailbox signs in.")
    grant = OAuth2Grant(token_endpoint, client_id, client_secret, refresh_token, scope)
    _check_oauth2(mailbox, grant)
    with transaction.atomic():
        _apply_oauth2(mailbox, grant)
    return mailbox


def _check_oauth2(mailbox: Mailbox, grant: OAuth2Grant) -> None:
    errors: dict[str, str] = {}
    try:
        oauth2.check_token_url(grant.token_endpoint.strip())
    except oauth2.OAuth2Error as exc:
        errors["token_endpoint"] = str(exc)
    if not grant.client_id.strip():
        errors["client_id"] = "The app registration's client id is required."
    if not grant.refresh_token.strip() and not mailbox.oauth2_refresh_token:
        errors["refresh_token"] = (
            "A refresh token is required: sign in with the mailbox's account to get one."  # noqa: S105
        )
    if errors:
        raise Invalid(fields=errors)


def _apply_oauth2(mailbox: Mailbox, grant: OAuth2Grant) -> None:
    """Inside the caller's transaction."""
    # The same lock a token refresh holds: a refresh under way finishes first, and its
    # tokens are then replaced, not written over the new ones.
    Mailbox.objects.select_for_update().filter(pk=mailbox.pk).exists()
    mailbox.auth = Mailbox.Auth.XOAUTH2
    mailbox.oauth2_token_url = grant.token_endpoint.strip()
    mailbox.oauth2_client_id = grant.client_id.strip()
    mailbox.oauth2_scope = grant.scope.strip()
    if grant.client_secret.strip():
        mailbox.oauth2_client_secret = secrets.encrypt(grant.client_secret.strip())
    if grant.refresh_token.strip():
        mailbox.oauth2_refresh_token = secrets.encrypt(grant.refresh_token.strip())
    mailbox.oauth2_access_token = ""
    mailbox.oauth2_expires_at = None
    mailbox.save(
        update_fields=[
            "auth",
            "oauth2_token_url",
            "oauth2_client_id",
            "oauth2_scope",
            "oauth2_client_secret",
            "oauth2_refresh_token",
            "oauth2_access_token",
            "oauth2_expires_at",
            "modified_at",
        ]
    )


def start_oauth2_consent(
    *,
    actor: User,
    mailbox: Mailbox,
    provider: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
) -> tuple[oauth2.Consent, str]:
    """Begin "Connect with Microsoft / Google": the consent to keep, and where to send the browser.

    `client_id` blank takes the mailbox's; `client_secret` blank keeps the stored one for the same
    client id (an app without a secret needs none). Nothing on the mailbox changes until
    `finish_oauth2_consent`.
    """
    _require_admin(actor, "change how a mailbox signs in")
    client_id = client_id.strip() or mailbox.oauth2_client_id
    if not client_id:
        raise Invalid(
            fields={"client_id": "Enter the app registration's client id, then connect."},
            code="oauth2_client_id",
        )
    if client_secret.strip():
        secret = secrets.encrypt(client_secret.strip())
    else:
        same_app = client_id == mailbox.oauth2_client_id
        secret = mailbox.oauth2_client_secret if same_app else ""
    try:
        consent = oauth2.begin(
            mailbox_id=mailbox.pk,
            user_id=actor.pk,
            provider_key=provider,
            client_id=client_id,
            client_secret=secret,
            redirect_uri=redirect_uri,
        )
    except oauth2.OAuth2Error as exc:
        raise Invalid(str(exc), code="oauth2_provider") from exc
    return consent, oauth2.authorization_url(consent, login_hint=mailbox.username)


def finish_oauth2_consent(
    *, actor: User, mailbox: Mailbox, consent: oauth2.Consent, code: str
) -> Mailbox:
    """Trade the provider's code for tokens and sign the mailbox in with them (XOAUTH2).

    The tokens are stored encrypted with the app registration and the provider's token endpoint
    and scope, so later scans refresh there. On any refusal nothing is changed.
    """
    _require_admin(actor, "change how a mailbox signs in")
    if consent.mailbox_id != mailbox.pk or consent.user_id != actor.pk:
        raise Invalid("This sign-in was started for another mailbox.", code="oauth2_state")
    try:
        grant = oauth2.exchange_code(consent, code)
    except oauth2.OAuth2Error as exc:
        raise Invalid(str(exc), code="oauth2_refused") from exc
    chosen = oauth2.provider(consent.provider)
    with transaction.atomic():
        # The lock a token refresh holds: one under way finishes first, then is replaced.
        Mailbox.objects.select_for_update().filter(pk=mailbox.pk).exists()
        mailbox.auth = Mailbox.Auth.XOAUTH2
        mailbox.oauth2_token_url = chosen.token_url
        mailbox.oauth2_client_id = consent.client_id
        mailbox.oauth2_client_secret = consent.client_secret
        mailbox.oauth2_scope = chosen.scope
        mailbox.oauth2_refresh_token = secrets.encrypt(grant.refresh_token)
        mailbox.oauth2_access_token = secrets.encrypt(grant.access_token)
        mailbox.oauth2_expires_at = grant.expires_at
        mailbox.save(update_fields=[*_OAUTH2_FIELDS, "oauth2_expires_at", "modified_at"])
    return mailbox


_OAUTH2_FIELDS = (
    "auth",
    "oauth2_token_url",
    "oauth2_client_id",
    "oauth2_scope",
    *_OAUTH2_SECRETS,
)


def _rotate_oauth2_secrets() -> int:
    """rotate_secrets() for the OAuth2 client secrets and tokens; returns how many."""
    rotated = 0
    with transaction.atomic():
        for mailbox in Mailbox.objects.select_for_update().exclude(
            oauth2_client_secret="", oauth2_refresh_token="", oauth2_access_token=""
        ):
            values = {f: secrets.rotate(getattr(mailbox, f)) for f in _OAUTH2_SECRETS}
            rotated += sum(1 for v in values.values() if v)
            Mailbox.objects.filter(pk=mailbox.pk).update(**values)
    return rotated


# --- spam (ARCHITECTURE.md, "Mail converter", Spam; the logic lives in mailconverter.spam) ------


def mark_spam(*, actor: User, tickets: Iterable[Record]) -> SpamMark:
    """Mark converter tickets as spam: bin them with their emails and the Lead made for them,
    block their senders, queue the emails' move to the spam folder (see mailconverter.spam)."""
    return spam.mark(actor=actor, tickets=tickets)


def undo_spam(*, actor: User, mark: SpamMark) -> spam.UndoResult:
    """Put back everything `mark_spam` did, except an email already moved on the server."""
    return spam.undo(actor=actor, mark=mark)
