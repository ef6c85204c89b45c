"""What the mail converter's settings pages read. Administrators only, like the pages.

Each function that takes an actor refuses anyone else (the CRM's 403 page); those that take a
mailbox are called with one already fetched through `mailbox()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet

from crm.exceptions import Forbidden, NotFound
from crm.models import User
from mailconverter import rules
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    Outcome,
    QuarantinedMail,
    Rule,
    ScanRun,
)
from mailconverter.services import folder_scannable

RUNS_SHOWN = 20
LEDGER_PAGE_SIZE = 25


def require_administrator(actor: User) -> None:
    if not actor.is_superuser:
        raise Forbidden("Only administrators may open the mail converter's settings.")


@dataclass(frozen=True)
class MailboxRow:
    mailbox: Mailbox
    last_run: ScanRun | None
    folders: int  # selected for scanning
    rules: int

    @property
    def counts(self) -> list[tuple[str, int]]:
        return outcome_counts(self.last_run.counts) if self.last_run else []


def outcome_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    """A run's counts in words ("Ticket created", 3), in the order of `Outcome`."""
    return [(label, counts[value]) for value, label in Outcome.choices if counts.get(value)]


@dataclass(frozen=True)
class RunRow:
    run: ScanRun
    counts: list[tuple[str, int]]

    @property
    def duration(self) -> str:
        """ "4.2 s", "3 min 5 s"; empty while the run goes on."""
        if self.run.finished_at is None:
            return ""
        seconds = max((self.run.finished_at - self.run.started_at).total_seconds(), 0)
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"


def mailboxes(actor: User) -> list[MailboxRow]:
    require_administrator(actor)
    rows = []
    for mailbox in Mailbox.objects.select_related("owner"):
        rows.append(
            MailboxRow(
                mailbox=mailbox,
                last_run=mailbox.scan_runs.order_by("-started_at").first(),
                folders=mailbox.folders.filter(selected=True, exists_on_server=True).count(),
                rules=mailbox.rules.count(),
            )
        )
    return rows


def mailbox(actor: User, pk: int) -> Mailbox:
    require_administrator(actor)
    found = Mailbox.objects.select_related("owner").filter(pk=pk).first()
    if found is None:
        raise NotFound("There is no such mailbox.")
    return found


def rule(mailbox: Mailbox, pk: int) -> Rule:
    found = Rule.objects.filter(mailbox=mailbox, pk=pk).first()
    if found is None:
        raise NotFound("There is no such rule.")
    return found


def blocked_sender(mailbox: Mailbox, pk: int) -> BlockedSender:
    found = BlockedSender.objects.filter(mailbox=mailbox, pk=pk).first()
    if found is None:
        raise NotFound("That sender is not blocked.")
    return found


def run(mailbox: Mailbox, pk: int) -> ScanRun:
    found = ScanRun.objects.filter(mailbox=mailbox, pk=pk).first()
    if found is None:
        raise NotFound("There is no such scan.")
    return found


@dataclass(frozen=True)
class FolderRow:
    folder: Folder
    scannable: bool


def folders(mailbox: Mailbox) -> list[FolderRow]:
    return [
        FolderRow(f, folder_scannable(f))
        for f in Folder.objects.filter(mailbox=mailbox, exists_on_server=True).order_by("name")
    ]


@dataclass(frozen=True)
class RuleRow:
    rule: Rule
    conditions: str  # "every message", or the conditions in words
    actions: str


def rule_rows(mailbox: Mailbox) -> list[RuleRow]:
    rows = []
    for row in Rule.objects.filter(mailbox=mailbox).order_by("position", "id"):
        try:
            words = rules.describe(
                rules.rule_from_dict({"conditions": row.conditions, "match": row.match})
            )
        except (ValueError, KeyError, TypeError):
            words = "(conditions the scan cannot read: edit the rule)"
        rows.append(RuleRow(row, words, ", ".join(_action_words(a) for a in row.actions)))
    return rows


_ACTION_WORDS = {
    "create_ticket": "create a ticket",
    "update_ticket": "update the ticket",
    "link": "link to",
    "link_or_create": "link to (or create)",
    "nothing": "do nothing",
}


def _action_words(action: dict[str, Any]) -> str:
    words = _ACTION_WORDS.get(str(action.get("type")), str(action.get("type")))
    if action.get("type") in ("link", "link_or_create"):
        words += f" {action.get('module')} by {action.get('by', 'sender')}"
    if action.get("create_lead"):
        words += " (a Lead when nobody is known)"
    return words


# --- activity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar of the runs chart: a run's processed messages, scaled to the chart's height."""

    run: ScanRun
    x: int
    height: int
    y: int
    failed: bool

    @property
    def middle(self) -> float:
        return self.x + BAR_WIDTH / 2


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    most: int


CHART_HEIGHT = 120
CHART_TOP = 16  # room for the figure above the tallest bar
BAR_WIDTH = 18
BAR_GAP = 8


def recent_runs(mailbox: Mailbox) -> list[ScanRun]:
    return list(ScanRun.objects.filter(mailbox=mailbox).order_by("-started_at")[:RUNS_SHOWN])


def run_rows(runs: list[ScanRun]) -> list[RunRow]:
    return [RunRow(r, outcome_counts(r.counts)) for r in runs]


def chart(runs: list[ScanRun]) -> Chart:
    """Bars oldest to newest, left to right; their heights relative to the busiest run."""
    ordered = list(reversed(runs))
    most = max((r.processed for r in ordered), default=0)
    bars = []
    for i, r in enumerate(ordered):
        height = round(CHART_HEIGHT * r.processed / most) if most else 0
        height = max(height, 2)  # an empty run is a sliver, so each run has its place
        bars.append(
            Bar(
                run=r,
                x=i * (BAR_WIDTH + BAR_GAP),
                height=height,
                y=CHART_TOP + CHART_HEIGHT - height,
                failed=r.status == ScanRun.Status.FAILED,
            )
        )
    width = max(len(bars) * (BAR_WIDTH + BAR_GAP), 1)
    return Chart(bars, width, CHART_TOP + CHART_HEIGHT, most)


def ledger_page(
    mailbox: Mailbox, *, sender: str = "", subject: str = "", outcome: str = "", page: Any = 1
) -> Page[LedgerEntry]:
    entries: QuerySet[LedgerEntry] = (
        LedgerEntry.objects.filter(mailbox=mailbox)
        .select_related("folder", "rule")
        .order_by("-created_at", "-pk")
    )
    if sender:
        entries = entries.filter(sender__icontains=sender.strip())
    if subject:
        entries = entries.filter(subject__icontains=subject.strip())
    if outcome in Outcome.values:
        entries = entries.filter(outcome=outcome)
    return Paginator(entries, LEDGER_PAGE_SIZE).get_page(page)


def quarantine(mailbox: Mailbox) -> list[QuarantinedMail]:
    return list(
        QuarantinedMail.objects.filter(entry__mailbox=mailbox, resolved_at=None)
        .select_related("entry", "entry__folder")
        .order_by("-updated_at")
    )


def quarantined(mailbox: Mailbox, entry_pk: int) -> QuarantinedMail:
    found = (
        QuarantinedMail.objects.filter(entry__mailbox=mailbox, entry__pk=entry_pk)
        .select_related("entry", "entry__mailbox", "entry__folder")
        .first()
    )
    if found is None:
        raise NotFound("There is no quarantined message with this number.")
    return found


def blocked_senders(mailbox: Mailbox) -> list[BlockedSender]:
    return list(BlockedSender.objects.filter(mailbox=mailbox).order_by("address"))
