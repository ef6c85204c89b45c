"""Celery tasks of the CRM: thin, they take ids and call one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from crm.services import mail


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=mail.MAX_ATTEMPTS)
def deliver_outgoing(self: Any, outgoing_id: int) -> str:
    """Hand one stored email to its server; on a transient failure, try again later.

    Only the attempt that failed schedules the next one. In-process (no Redis, or called
    directly) nothing is scheduled and nothing is raised into the user's request: the row
    waits as "retrying" and `retry_due_outgoing` sends it when due.
    """
    attempt = mail.deliver(outgoing_id=outgoing_id)
    in_process = self.request.is_eager or self.request.called_directly
    if attempt.retry_in is not None and not in_process:
        # A second late, so the row is due when the retry runs.
        raise self.retry(countdown=attempt.retry_in + 1)
    return attempt.status


@shared_task(acks_late=True, ignore_result=True)
def retry_due_outgoing() -> int:
    """Beat's sweep (CELERY_BEAT_SCHEDULE): send whatever outgoing mail is due."""
    return mail.retry_due()
