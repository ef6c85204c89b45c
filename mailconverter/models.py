"""The mail converter's rows: mailboxes, folders and their cursors, rules, the ledger.

ARCHITECTURE.md, "Mail converter". The ledger is what makes the scan exactly-once: one row per
(mailbox, folder, UIDVALIDITY, UID) ever looked at, and at most one row per email identity
that acted on it (`acted`), whatever folder or mailbox the email turned up in.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from crm.models import SmtpSecurity, SmtpSettings
from mailconverter import secrets


class Mailbox(models.Model):
    class Security(models.TextChoices):
        SSL = "ssl", "SSL/TLS"
        STARTTLS = "starttls", "STARTTLS"
        NONE = "none", "None (loopback and tests only)"

    class Auth(models.TextChoices):
        PLAIN = "plain", "PLAIN"
        LOGIN = "login", "LOGIN"
        XOAUTH2 = "xoauth2", "OAuth2 (XOAUTH2: Microsoft 365, Gmail)"

    class LookFor(models.TextChoices):
        ALL = "all", "All new mail"
        UNSEEN = "unseen", "Unread mail only"

    class AfterScan(models.TextChoices):
        LEAVE = "leave", "Leave as it is"
        MARK_READ = "mark_read", "Mark as read"
        MOVE = "move", "Move to a folder"

    name = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=993)
    security = models.CharField(max_length=8, choices=Security.choices, default=Security.SSL)
    verify_certificate = models.BooleanField(default=True)
    username = models.CharField(max_length=320)
    # Fernet token (mailconverter.secrets); the password itself is never stored nor shown.
    secret = models.TextField(blank=True, editable=False)
    auth = models.CharField(max_length=8, choices=Auth.choices, default=Auth.PLAIN)
    # OAuth2 (XOAUTH2): the app registration and its tokens (mailconverter.oauth2). Secrets and
    # tokens are Fernet tokens like `secret`, never shown back.
    oauth2_token_url = models.URLField("OAuth2 token endpoint", max_length=500, blank=True)
    oauth2_client_id = models.CharField("OAuth2 client id", max_length=255, blank=True)
    oauth2_client_secret = models.TextField(blank=True, editable=False)
    oauth2_scope = models.CharField("OAuth2 scope", max_length=1000, blank=True)
    oauth2_refresh_token = models.TextField(blank=True, editable=False)
    oauth2_access_token = models.TextField(blank=True, editable=False)
    oauth2_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    address = models.EmailField(
        blank=True, help_text="The mailbox's own address; mail from it is never converted."
    )
    connection_options = models.JSONField(
        default=dict, blank=True, help_text="Advanced connection parameters."
    )
    is_pec = models.BooleanField("certified mail (PEC)", default=False)
    enabled = models.BooleanField(default=True)
    look_for = models.CharField(max_length=8, choices=LookFor.choices, default=LookFor.ALL)
    after_scan = models.CharField(
        max_length=10, choices=AfterScan.choices, default=AfterScan.MARK_READ
    )
    processed_folder = models.CharField(max_length=255, blank=True)
    unmatched_folder = models.CharField(max_length=255, blank=True)
    spam_folder = models.CharField(max_length=255, blank=True)
    interval_minutes = models.PositiveIntegerField(default=5)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Records the converter creates belong to this user; it writes as this user.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "mailboxes"

    def __str__(self) -> str:
        return self.name

    @property
    def password(self) -> str:
        return secrets.decrypt(self.secret)

    def set_password(self, plain: str) -> None:
        self.secret = secrets.encrypt(plain) if plain else ""


class MailboxLease(models.Model):
    """Who scans a mailbox now. A lease, not a lock held by a connection: a crashed holder's
    lease runs out, and every message transaction re-checks it, so two scans never both commit.
    """

    mailbox = models.OneToOneField(
        Mailbox, on_delete=models.CASCADE, primary_key=True, related_name="lease"
    )
    token = models.CharField(max_length=64, blank=True)
    holder = models.CharField(max_length=255, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.mailbox_id}: {self.holder or 'free'}"


class Folder(models.Model):
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=1000)  # as the server names it (modified UTF-7 decoded)
    selected = models.BooleanField(default=False)
    special_use = models.CharField(max_length=32, blank=True)  # RFC 6154: \Sent, \Archive…
    message_count = models.PositiveIntegerField(null=True, blank=True)
    unseen_count = models.PositiveIntegerField(null=True, blank=True)
    # The cursor (RFC 3501 §2.3.1.1): UIDs are only comparable within one UIDVALIDITY.
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    last_scan_at = models.DateTimeField(null=True, blank=True)
    exists_on_server = models.BooleanField(default=True)

    class Meta:
        ordering = ["mailbox", "name"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="converter_folder_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox}: {self.name}"


class Rule(models.Model):
    """One rule; `conditions` and `actions` are lists checked by `mailconverter.rules`.

    conditions: [{"field": "subject", "operator": "contains", "value": "invoice"}, ...]
    actions:    [{"type": "create_ticket"}, {"type": "link", "module": "Contacts", ...}, ...]
    """

    class Match(models.TextChoices):
        ALL = "all", "All conditions"
        ANY = "any", "Any condition"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    match = models.CharField(max_length=3, choices=Match.choices, default=Match.ALL)
    conditions = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list)
    stop_after_match = models.BooleanField(default=True)

    class Meta:
        ordering = ["mailbox", "position", "id"]

    def __str__(self) -> str:
        return self.name or f"Rule {self.position}"


class Outcome(models.TextChoices):
    CREATED = "created", "Ticket created"
    UPDATED = "updated", "Ticket updated"
    LINKED = "linked", "Linked"
    IGNORED = "ignored", "Ignored by a rule"
    UNMATCHED = "unmatched", "No rule applied"
    DUPLICATE = "duplicate", "Already converted"
    LOOP = "loop", "Automatic mail (not converted)"
    BLOCKED = "blocked", "Blocked sender"
    OVERSIZE = "oversize", "Too large (quarantined)"
    FAILED = "failed", "Failed (quarantined)"


class LedgerEntry(models.Model):
    """Every message the converter has looked at, and what became of it."""

    mailbox = models.ForeignKey(  # indexed by converter_ledger_uid, which it leads
        Mailbox, on_delete=models.CASCADE, related_name="ledger", db_index=False
    )
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="ledger")
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    identity = models.CharField(max_length=64)  # crm.email.parse.identity
    # The one row per identity whose rules ran: the same email elsewhere is a duplicate.
    acted = models.BooleanField(default=False)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.CharField(max_length=500, blank=True)
    sender = models.CharField(max_length=320, blank=True)
    subject = models.TextField(blank=True)
    size = models.PositiveBigIntegerField(default=0)
    message = models.ForeignKey(
        "crm.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rule = models.ForeignKey(
        Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger"
    )
    records = models.ManyToManyField("crm.Record", blank=True, related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # \Seen or a move still owed to the server for a committed message (RFC 3501 §6.4.6).
    after_scan_pending = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    # "Mark as spam" owes the server a move to the mailbox's spam folder (done by the next scan).
    spam_move_pending = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "folder", "uidvalidity", "uid"], name="converter_ledger_uid"
            ),
            models.UniqueConstraint(
                fields=["identity"], condition=Q(acted=True), name="converter_ledger_acted_once"
            ),
        ]
        # Plain indexes declared here: db_index= on a text field adds a pattern-matching index
        # on PostgreSQL that no query uses and every message's row pays for.
        indexes = [
            models.Index(fields=["identity"], name="converter_ledger_identity"),
            models.Index(fields=["sender"], name="converter_ledger_sender"),
            models.Index(fields=["mailbox", "-created_at"], name="converter_ledger_recent"),
            models.Index(
                fields=["folder", "uidvalidity"],
                condition=Q(after_scan_pending=True),
                name="converter_ledger_pending",
            ),
            models.Index(
                fields=["sender", "created_at"],
                condition=Q(outcome="created"),
                name="converter_ledger_created_by",
            ),
        ]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.folder} UID {self.uid}: {self.outcome}"


class QuarantinedMail(models.Model):
    """The exact bytes of a message the converter could not process, for retry or download.

    Not crm's QuarantinedMessage: this one belongs to a ledger row (mailbox, folder, UID), so a
    retry can finish the job on the server (\\Seen, move) once it succeeds.
    """

    class Kind(models.TextChoices):
        ERROR = "error", "Processing failed"
        OVERSIZE = "oversize", "Too large"

    entry = models.OneToOneField(LedgerEntry, on_delete=models.CASCADE, related_name="quarantine")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    raw = models.FileField(max_length=200)  # content-addressed (crm.services.blobs)
    raw_sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()  # of the stored bytes (headers only when oversize)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.entry}: {self.error[:60]}"


class ScanRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        OK = "ok", "Finished"
        FAILED = "failed", "Failed"
        BUSY = "busy", "Skipped: another scan was running"
        STOPPED = "stopped", "Stopped on request"

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="scan_runs")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    counts = models.JSONField(default=dict, blank=True)  # outcome -> number of messages
    error = models.TextField(blank=True)
    # Progress while it runs: the folder being scanned and its messages done of total.
    folder = models.CharField(max_length=1000, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["mailbox", "-started_at"], name="converter_run_recent")]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def processed(self) -> int:
        return sum(self.counts.values())


class BlockedSender(models.Model):
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="blocked_senders")
    address = models.CharField(max_length=320)  # normalised (crm.email.addresses)
    reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "address"], name="converter_blocked_unique")
        ]

    def __str__(self) -> str:
        return self.address


class TicketOrigin(models.Model):
    """Where a converter ticket came from: the "Mail information" on the ticket's page, and
    what "Mark as spam" binds, blocks and moves."""

    ticket = models.OneToOneField(
        "crm.Record", on_delete=models.CASCADE, related_name="mail_origin"
    )
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="ticket_origins"
    )
    ledger_entry = models.ForeignKey(
        LedgerEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        "crm.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sender_address = models.CharField(max_length=320, blank=True)
    sender_name = models.CharField(max_length=255, blank=True)
    recipients = models.JSONField(default=dict, blank=True)  # {"to": [{name, email}], "cc": […]}
    # The Lead the converter made for this ticket alone (None when it found an existing one).
    created_lead = models.ForeignKey(
        "crm.Record", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.ticket_id} from {self.sender_address}"


class SpamMark(models.Model):
    """One "Mark as spam": what it binned, blocked and queued, so that Undo puts it all back."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    tickets = models.ManyToManyField("crm.Record", related_name="+")
    leads = models.ManyToManyField("crm.Record", blank=True, related_name="+")
    ledger_entries = models.ManyToManyField(LedgerEntry, blank=True, related_name="spam_marks")
    # Senders this mark blocked (not those blocked before): [{"mailbox": id, "address": …}].
    blocked = models.JSONField(default=list, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"spam mark {self.pk} by {self.actor_id}"


class MailboxSmtp(models.Model):
    """How "Answer by mail (info)" and mailed comments leave from this mailbox's address.

    Blank host: the mailbox's own server; blank user name: the mailbox's user and password.
    """

    mailbox = models.OneToOneField(
        Mailbox, on_delete=models.CASCADE, primary_key=True, related_name="smtp"
    )
    host = models.CharField(
        "SMTP server", max_length=255, blank=True, help_text="Blank: the mailbox's server."
    )
    port = models.PositiveIntegerField(default=587)
    security = models.CharField(
        max_length=8, choices=SmtpSecurity.choices, default=SmtpSecurity.STARTTLS
    )
    username = models.CharField(
        max_length=320, blank=True, help_text="Blank: the mailbox's user name and password."
    )
    # Fernet token (crm.secrets), like the mailbox's own password.
    secret = models.TextField(blank=True, editable=False)

    class Meta:
        verbose_name = "mailbox SMTP settings"
        verbose_name_plural = "mailbox SMTP settings"

    def __str__(self) -> str:
        return f"{self.mailbox}: {self.host or self.mailbox.host}:{self.port}"

    def set_password(self, plain: str) -> None:
        self.secret = secrets.encrypt(plain) if plain else ""

    def smtp_settings(self) -> SmtpSettings:
        """The plain settings the CRM's sending core takes (`crm.services.mail.send(smtp=…)`)."""
        own_login = bool(self.username)
        return SmtpSettings(
            host=self.host or self.mailbox.host,
            port=self.port,
            security=self.security,
            username=self.username if own_login else self.mailbox.username,
            password=secrets.decrypt(self.secret) if own_login else self.mailbox.password,
            verify_certificate=self.mailbox.verify_certificate,
        )
