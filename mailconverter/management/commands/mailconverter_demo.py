from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crm.exceptions import ServiceError
from mailconverter import localsource
from mailconverter.imap import ImapError
from mailconverter.models import ScanRun


class Command(BaseCommand):
    help = (
        "Create the mailbox 'Support (sample)' with its rules and convert the sample emails of "
        "fixtures/sample_mailbox into tickets and links (run after load_demo; safe to repeat)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            mailbox = localsource.install_sample()
            result = localsource.scan_sample(mailbox)
        except (ServiceError, ImapError) as exc:
            raise CommandError(str(exc)) from exc
        run = result.run
        if run.status == ScanRun.Status.FAILED:
            raise CommandError(f"The sample mailbox could not be scanned: {run.error}")
        if not result.entries:
            self.stdout.write(f"{mailbox.name}: no new sample email (converted before).")
            return
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(run.counts.items()))
        self.stdout.write(
            self.style.SUCCESS(f"{mailbox.name}: {len(result.entries)} sample emails, {counts}.")
        )
        for entry in result.entries:
            records = ", ".join(r.number or str(r.pk) for r in entry.records.order_by("pk"))
            detail = f" -> {records}" if records else f" ({entry.reason})" if entry.reason else ""
            self.stdout.write(
                f"  {entry.get_outcome_display():<31} {_short(entry.subject)}{detail}"
            )
        if result.tickets:
            self.stdout.write(
                f"{len(result.tickets)} new tickets from mail: "
                + ", ".join(t.number or str(t.pk) for t in result.tickets)
                + " (see Tickets, and Settings › Mail converter)."
            )


def _short(text: str, width: int = 56) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
