"""Conversion in worker processes, so that one scan uses every core.

The scan's own process stays the coordinator: it holds the lease and the one IMAP connection,
fetches, and after each batch sets \\Seen, moves and advances the cursor, exactly as when it
converts alone. It parses nothing: to keep apart the messages that must not run side by
side it reads only their ids and addresses (`crm.email.parse.ids_and_addresses`). Only
`scanner.process` (one message, parsed there, in its own transactions) runs in the workers,
each with its own database connection. Each message's transaction fences on the
lease with a shared row lock, so the workers commit side by side, while a scan taking the
lease over waits for their commits and then makes every later fence fail.

The workers are never left waiting for the coordinator: each holds the message it converts
and the next one, and the next batch is handed out as soon as the last one is, while the
coordinator flags the batch that has just finished. A batch is flagged once it and every
batch before it have committed, so flags still follow commits, and messages that must not
run side by side still run in the order of their UIDs across batches.

A worker that dies (killed, out of memory) takes nothing with it: its message's attempt was
counted and committed first, its conversion rolled back; the coordinator collects the other
workers' results, stops the scan with an error in words, and the next scan retries the
message (and the one it held next, never started). Workers are forked (billiard, Celery's
multiprocessing, which lets a Celery worker process have children) before the batch's fetch
thread starts, with the database connections closed, and they leave when the coordinator
closes their pipe or dies.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import billiard
from billiard.connection import wait
from django.db import connections

from mailconverter.models import LedgerEntry

log = logging.getLogger(__name__)

HELD = 2  # jobs a worker holds: the one it converts and the next


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


def _next(waiting: list[Job], elsewhere: Iterable[Job]) -> Job | None:
    """Take the first waiting job that shares nothing with a job held by another worker or
    with an earlier waiting one: jobs that conflict run one after the other, in the order of
    their UIDs (a worker converts the jobs it holds in the order it was given them)."""
    taken: set[str] = set()
    for job in elsewhere:
        taken |= job.conflicts
    for position, job in enumerate(waiting):
        if taken.isdisjoint(job.conflicts):
            return waiting.pop(position)
        taken |= job.conflicts
    return None


class BatchDone:
    """Every job of a batch, and of the batches before it, has its result."""


BATCH_DONE = BatchDone()


class _Line:
    """The jobs waiting to be handed out, taken a batch at a time, and the results each batch
    still waits for, oldest batch first."""

    def __init__(self, batches: Iterator[Sequence[Job]]) -> None:
        self._batches = batches
        self.waiting: list[Job] = []
        self._batch_of: dict[int, int] = {}
        self._left: deque[list[int]] = deque()  # [batch number, results it waits for]
        self._taken = 0

    def take(self) -> bool:
        jobs = next(self._batches, None)
        if jobs is None:
            return False
        self._taken += 1
        self.waiting.extend(jobs)
        self._batch_of.update((job.uid, self._taken) for job in jobs)
        self._left.append([self._taken, len(jobs)])
        return True

    def done(self, job: Job) -> int:
        """Count the job's result; how many batches are now finished, the oldest first."""
        number = self._batch_of.pop(job.uid)
        for batch in self._left:
            if batch[0] == number:
                batch[1] -= 1
        finished = 0
        while self._left and self._left[0][1] == 0:
            self._left.popleft()
            finished += 1
        return finished


class _Worker:
    """A worker process, the jobs it holds in the order it converts them, and the thread that
    sends them: a job of megabytes is sent while the worker converts the one before, and the
    coordinator meanwhile collects the other workers' results."""

    def __init__(self, process: Any, pipe: Any) -> None:
        self.process, self.pipe = process, pipe
        self.jobs: deque[Job] = deque()
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_all, daemon=True)

    def start_sending(self) -> None:
        self._sender.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._outbox.put(message)

    def hand(self, job: Job) -> None:
        self.jobs.append(job)
        self.send(("convert", job))

    def _send_all(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self.pipe.send(message)
            except OSError:  # the worker died: the coordinator learns it from the pipe
                return

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=60)
        if self._sender.is_alive():  # the worker reads nothing: hung, its transaction rolls back
            os.kill(self.process.pid, signal.SIGKILL)
            self._sender.join(timeout=5)  # the send fails: the pipe's other end is gone
        self.pipe.close()  # the worker's recv() ends: it leaves


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
        for worker in self._workers:  # threads only once every fork is done
            worker.start_sending()
        log.info("mailbox %s: %s conversion workers started", mailbox, count)

    def convert(
        self, batches: Iterator[Sequence[Job]], stop: Callable[[], bool]
    ) -> Iterator[LedgerEntry | BatchDone]:
        """Each job's result as it comes, and BATCH_DONE once every job of a batch and of the
        batches before it has its result. The next batch is taken as soon as the last one is
        handed out, so the workers go on converting while the coordinator flags a finished
        batch. After an error: the rest of the results in flight, then the error. `stop` is
        asked after each result: once it says so, the jobs at hand (converting, or next in a
        worker's line) are finished and no other is handed out."""
        line = _Line(batches)
        trouble: BaseException | None = None
        stopping = False
        while True:
            if trouble is None and not stopping:
                self._hand_out(line)
            busy = {w.pipe: w for w in self._workers if w.jobs}
            if not busy:
                break
            for pipe in wait(list(busy)):
                worker = busy[pipe]
                job = worker.jobs.popleft()
                result = self._answer(worker, job)
                if not isinstance(result, LedgerEntry):
                    trouble = trouble or result
                    continue
                yield result
                stopping = stopping or stop()
                for _ in range(line.done(job)):
                    yield BATCH_DONE
        if trouble is not None:
            raise trouble

    def _hand_out(self, line: _Line) -> None:
        """Give each worker up to HELD jobs, the least busy first, so that it starts the next
        as soon as it sends a result, without waiting for the coordinator to read it."""
        while True:
            free = sorted(
                (w for w in self._workers if len(w.jobs) < HELD), key=lambda w: len(w.jobs)
            )
            if not free:
                return
            if not line.waiting and not self._take(line):
                return
            for worker in free:
                others = (j for w in self._workers if w is not worker for j in w.jobs)
                job = _next(line.waiting, others)
                if job is not None:
                    worker.hand(job)
                    break
            else:
                return  # every waiting job waits for another worker's

    def _take(self, line: _Line) -> bool:
        """The next batch in line; each worker forgets what it read for the last one."""
        if not line.take():
            return False
        for worker in self._workers:
            worker.send(("batch",))
        return True

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
            worker.close()
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
