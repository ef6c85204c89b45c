from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from mailconverter import scanner
from mailconverter.models import Mailbox, ScanRun


class Command(BaseCommand):
    help = "Scan mail converter mailboxes now, in the foreground, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--mailbox", metavar="NAME", help="the mailbox's name")
        which.add_argument("--all", action="store_true", help="every enabled mailbox")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all"]:
            mailboxes = list(Mailbox.objects.filter(enabled=True).order_by("name"))
            if not mailboxes:
                raise CommandError("No enabled mailbox to scan.")
        else:
            found = Mailbox.objects.filter(name=options["mailbox"]).first()
            if found is None:
                raise CommandError(f"No mailbox named {options['mailbox']!r}.")
            mailboxes = [found]

        stop = {"requested": False}

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            stop["requested"] = True  # finish the message at hand, then stop

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        failed = 0
        try:
            for mailbox in mailboxes:
                if stop["requested"]:
                    break
                with tqdm(desc=mailbox.name, unit="email", file=self.stdout) as bar:

                    def progress(folder: str, done: int, total: int, bar: tqdm = bar) -> None:
                        bar.total = total
                        bar.set_postfix_str(folder)
                        bar.n = done
                        bar.refresh()

                    run = scanner.scan(
                        mailbox, progress=progress, should_stop=lambda: stop["requested"]
                    )
                self.stdout.write(f"{mailbox.name}: {_summary(run)}")
                if run.status == ScanRun.Status.FAILED:
                    failed += 1
                    self.stderr.write(f"  {run.error}")
        finally:
            signal.signal(signal.SIGTERM, previous)
        if failed:
            raise CommandError(f"{failed} mailbox scans failed (errors above).")


def _summary(run: ScanRun) -> str:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(run.counts.items())) or "no mail"
    return f"{run.get_status_display()}: {counts}."
