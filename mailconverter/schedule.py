"""One django-celery-beat periodic task per enabled mailbox, kept in step with the mailbox.

The beat entries live in the database (django-celery-beat's DatabaseScheduler), named stably
per mailbox, so any number of beat restarts or web processes agree on them. Called by the
mailbox services inside their transaction; `sync_all` repairs entries edited behind our back.
"""

from __future__ import annotations

import json

from django_celery_beat.models import IntervalSchedule, PeriodicTask

from mailconverter.models import Mailbox

TASK = "mailconverter.tasks.scan_mailbox"
PREFIX = "mailconverter: scan "


def task_name(mailbox_pk: int) -> str:
    return f"{PREFIX}{mailbox_pk}"


def sync(mailbox: Mailbox) -> PeriodicTask | None:
    """Create or update the mailbox's entry; a disabled mailbox's entry is kept, disabled."""
    name = task_name(mailbox.pk)
    if not mailbox.enabled:
        PeriodicTask.objects.filter(name=name, enabled=True).update(enabled=False)
        _touch()
        return PeriodicTask.objects.filter(name=name).first()
    every, _ = IntervalSchedule.objects.get_or_create(
        every=max(1, mailbox.interval_minutes), period=IntervalSchedule.MINUTES
    )
    wanted = {
        "task": TASK,
        "interval": every,
        "args": json.dumps([mailbox.pk]),
        "enabled": True,
        "description": f"Scan the mailbox {mailbox.name} every {every.every} minutes.",
    }
    entry = PeriodicTask.objects.filter(name=name).first()
    if entry is None:
        return PeriodicTask.objects.create(name=name, **wanted)
    changed = [k for k, v in wanted.items() if getattr(entry, k) != v]
    if changed:
        for key in changed:
            setattr(entry, key, wanted[key])
        # save() tells a running beat that the schedule changed (PeriodicTasks.changed).
        entry.save()
    return entry


def remove(mailbox_pk: int) -> None:
    PeriodicTask.objects.filter(name=task_name(mailbox_pk)).delete()
    _touch()


def sync_all() -> int:
    """Bring every mailbox's entry in step and drop entries of mailboxes gone; returns how many
    entries were checked."""
    mailboxes = list(Mailbox.objects.all())
    for mailbox in mailboxes:
        sync(mailbox)
    keep = {task_name(m.pk) for m in mailboxes}
    stale = PeriodicTask.objects.filter(name__startswith=PREFIX).exclude(name__in=keep)
    if stale.exists():
        stale.delete()
        _touch()
    return len(mailboxes)


def _touch() -> None:
    # Bulk update()/delete() bypass the model signals that tell beat to reload its schedule.
    from django_celery_beat.models import PeriodicTasks

    PeriodicTasks.update_changed()
