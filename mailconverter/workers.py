"""Conversion in worker processes, so that one scan uses every core.

The scan's own process stays the coordinator: it holds the lease and the one IMAP connection,
fetches, and after each batch sets \\Seen, moves and advances the cursor, exactly as when it
converts alone. It parses nothing: to keep apart the messages that must not run side by
side it reads only their ids and addresses (`crm.email.parse.ids_and_addresses`). Only
`scanner.process` (one message, parsed there, in its own transactions) runs in the workers,
each with its own database connection. Each message's transaction fences on the
lease with a shared row lock, so the workers commit side by side, while a scan taking the
lease over waits for their commits and then makes every later fence fail.

A worker that dies (killed, out of memory) takes nothing with it: its message's attempt was
counted and committed first, its conversion rolled back; the coordinator collects the other
workers' results, stops the scan with an error in words, and the next scan retries the
message. Workers are forked (billiard, Celery's multiprocessing, which lets a Celery worker
process have children) before the batch's fetch thread starts, with the database
connections closed, and they leave when the coordinator closes their pipe or dies.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import billiard
from billiard.connection import wait
from django.db import connections

from mailconverter.models import LedgerEntry

log = logging.getLogger(__name__)


class WorkerDied(Exception):
    """A conversion worker ended while converting a message; the next scan retries it."""


@dataclass(frozen=True)
class Job:
    folder: int
    uidvalidity: int
    uid: int
    raw: bytes
    conflicts: frozenset[str] = frozenset()  # never converted alongside a job sharing one


@dataclass(frozen=True)
class Failed:
    """An error that ends the scan (the lease lost, or one no quarantine could hold)."""

    uid: int
    lease_lost: bool
    error: str


def _next(waiting: list[Job], running: list[Job]) -> Job | None:
    """Take the first waiting job that shares nothing with a running job or with an earlier
    waiting one: jobs that conflict run one after the other, in the order of their UIDs."""
    taken: set[str] = set()
    for job in running:
        taken |= job.conflicts
    for position, job in enumerate(waiting):
        if taken.isdisjoint(job.conflicts):
            return waiting.pop(position)
        taken |= job.conflicts
    return None


class _Worker:
    def __init__(self, process: Any, pipe: Any) -> None:
        self.process, self.pipe = process, pipe
        self.job: Job | None = None


class Workers:
    """`count` forked conversion workers for one scan of one mailbox."""

    def __init__(self, mailbox: int, token: str, count: int) -> None:
        connections.close_all()  # a forked child must never share the parent's socket
        context = billiard.get_context("fork")
        self._workers: list[_Worker] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve, args=(theirs, ours, mailbox, token), daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append(_Worker(process, ours))
        log.info("mailbox %s: %s conversion workers started", mailbox, count)

    def convert(self, jobs: Sequence[Job], stop: Callable[[], bool]) -> Iterator[LedgerEntry]:
        """Each job's result as it comes; after an error, the rest of the results in flight,
        then the error. `stop` is asked after each result: once it says so, the jobs at hand
        are finished and no other is handed out."""
        for worker in self._workers:
            worker.pipe.send(("batch",))  # forget what was read for the last batch
        waiting = list(jobs)
        trouble: BaseException | None = None
        stopping = False
        while True:
            idle = [w for w in self._workers if w.job is None]
            while idle and trouble is None and not stopping:
                job = _next(waiting, [w.job for w in self._workers if w.job is not None])
                if job is None:
                    break
                worker = idle.pop()
                worker.job = job
                worker.pipe.send(("convert", job))
            busy = {w.pipe: (w, w.job) for w in self._workers if w.job is not None}
            if not busy:
                break
            for pipe in wait(list(busy)):
                worker, job = busy[pipe]
                worker.job = None
                result = self._answer(worker, job)
                if isinstance(result, LedgerEntry):
                    yield result
                    stopping = stopping or stop()
                elif trouble is None:
                    trouble = result
        if trouble is not None:
            raise trouble

    def _answer(self, worker: _Worker, job: Job) -> LedgerEntry | BaseException:
        try:
            answer = worker.pipe.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=5)
            self._workers.remove(worker)
            code = worker.process.exitcode
            return WorkerDied(
                f"a conversion worker stopped (exit code {code}) while converting UID "
                f"{job.uid}; the message is retried at the next scan"
            )
        if isinstance(answer, Failed):
            from mailconverter.scanner import LeaseLost

            return LeaseLost(answer.error) if answer.lease_lost else RuntimeError(answer.error)
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        for worker in self._workers:
            worker.pipe.close()  # the worker's recv() ends: it leaves
        for worker in self._workers:
            worker.process.join(timeout=60)
            if worker.process.is_alive():  # hung: its transaction rolls back
                os.kill(worker.process.pid, signal.SIGKILL)
                worker.process.join(timeout=5)
        self._workers = []


def _serve(pipe: Any, parents_end: Any, mailbox_pk: int, token: str) -> None:
    """A worker's life: convert what the coordinator sends until it closes the pipe."""
    parents_end.close()  # else the pipe would never report the coordinator's end
    # The coordinator decides when to stop (it finishes its batch first); a worker ends
    # when its pipe closes, so a shutdown's signals to the whole group do not cut it short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mailconverter import scanner
    from mailconverter.models import Folder, Mailbox

    try:
        mailbox = Mailbox.objects.select_related("owner").get(pk=mailbox_pk)
        ctx = scanner.worker_context(mailbox, token)
        scanner.commit_without_waiting()  # the scan makes the commits durable before flags
        folders: dict[int, Folder] = {}
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return
            if message[0] == "batch":
                scanner.fresh_batch(ctx)
                continue
            job: Job = message[1]
            if job.folder not in folders:
                folders[job.folder] = Folder.objects.get(pk=job.folder)
            result = _convert(ctx, mailbox, folders[job.folder], job)
            try:
                pipe.send(result)
            except OSError:  # the coordinator left (its scan failed): nothing waits for it
                return
    finally:
        connections.close_all()
        log.debug("conversion worker %s leaves", os.getpid())


def _convert(ctx: Any, mailbox: Any, folder: Any, job: Job) -> LedgerEntry | Failed:
    from mailconverter import scanner

    try:
        entry = scanner.process(mailbox, folder, job.uidvalidity, job.uid, job.raw, scan=ctx)
    except scanner.LeaseLost as exc:
        return Failed(job.uid, True, str(exc))
    except Exception as exc:  # process() quarantines what it can; this is the database gone
        log.exception("conversion of UID %s failed", job.uid)
        return Failed(job.uid, False, f"{type(exc).__name__}: {exc}")
    # What the coordinator needs of the row: the outcome, the attempts, whether to flag it.
    return LedgerEntry(
        pk=entry.pk,
        uid=entry.uid,
        uidvalidity=entry.uidvalidity,
        outcome=entry.outcome,
        attempts=entry.attempts,
        after_scan_pending=entry.after_scan_pending,
    )
