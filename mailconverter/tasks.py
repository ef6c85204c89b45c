"""Celery tasks of the mail converter: thin, they take ids and call one service.

A worker's SIGTERM (warm shutdown) lets a scan finish the message at hand, flag what
committed, move the cursor and end as "stopped" instead of running through the whole folder
or being cut off mid-message when the process manager's grace period runs out:

- solo and thread pools run the task in the worker's main process, where Celery's own
  handler sets `celery.worker.state.should_stop`;
- prefork children are forked after this module is imported, so they share `_shutdown`, a
  one-byte anonymous shared memory page that the main process sets on `worker_shutting_down`;
- a SIGTERM sent to a scanning child itself (a process manager signalling the whole group,
  or `revoke(terminate=True)`) stops that child's scan the same way; an idle child, or one
  signalled twice, ends at once, as Celery has it.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
from types import FrameType
from typing import Any

from celery import shared_task
from celery.signals import beat_init, worker_process_init, worker_shutting_down
from celery.worker import state as worker_state

from mailconverter import schedule, services

log = logging.getLogger(__name__)

_shutdown = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: seen by children forked later
_scanning = False
_stop_here = False


@shared_task(acks_late=True, ignore_result=True)
def scan_mailbox(mailbox_id: int, run_id: int | None = None) -> None:
    """Scan one mailbox (beat's periodic entry, or "Scan now" with the run it queued)."""
    global _scanning, _stop_here
    _scanning = True
    try:
        services.run_scan(mailbox_id=mailbox_id, run_id=run_id, should_stop=stop_requested)
    finally:
        # The signal stopped this scan; the child serves on unless told to end again.
        _scanning = _stop_here = False


def stop_requested() -> bool:
    return bool(_shutdown[0] or _stop_here or worker_state.should_stop)


@beat_init.connect
def _repair_schedule(**_: Any) -> None:
    # Mailboxes restored from a backup or loaded from fixtures bypassed the services.
    checked = schedule.sync_all()
    log.info("periodic scans in step for %d mailboxes", checked)


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    _shutdown[0] = 1


@worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    signal.signal(signal.SIGTERM, _on_child_sigterm)


def _on_child_sigterm(signum: int, frame: FrameType | None) -> None:
    global _stop_here
    if not _scanning or _stop_here:
        # Idle, or asked twice: end now, as an unhandled SIGTERM would.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log.info("SIGTERM: the scan stops after the message at hand")
    _stop_here = True
