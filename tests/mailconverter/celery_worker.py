"""Real Celery workers for the tests: `celery -A crm worker` subprocesses on Redis.

The worker reads the same PostgreSQL test database as the test (the tests that use it are
transactional, so it sees committed rows) and the same encryption keys, so it can decrypt the
mailboxes' passwords.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection
from kombu import pools

from crm.celery import app as celery_app

REDIS_DB_URL = os.environ.get("CELERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database the test runs on (pytest-django's `test_…` copy)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


class Worker:
    def __init__(self, name: str, workdir: Path, extra_env: dict[str, str]) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": REDIS_DB_URL,
            "SECRET_KEY": settings.SECRET_KEY,
            "MEDIA_ROOT": str(workdir / "media"),
            "CONN_MAX_AGE": "0",
            **extra_env,
        }
        if settings.FIELD_ENCRYPTION_KEY:
            env["FIELD_ENCRYPTION_KEY"] = settings.FIELD_ENCRYPTION_KEY
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "crm",
                    "worker",
                    "--loglevel=INFO",
                    "--concurrency=1",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    f"--hostname={name}@%h",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: {self.output()}")
            if b"ready." in self.log.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.name} not ready: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (a warm shutdown, what a process manager sends) and wait for the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise


@contextmanager
def real_celery(workdir: Path, count: int = 1, **extra_env: str) -> Iterator[list[Worker]]:
    """`count` workers on an empty queue; the test process sends tasks to Redis meanwhile."""
    conf: Any = celery_app.conf
    saved = {k: conf[k] for k in ("task_always_eager", "broker_url")}
    conf.task_always_eager = False
    conf.broker_url = REDIS_DB_URL
    _forget_connections()
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.flushdb()  # our own Redis database: stale tasks out
    workers: list[Worker] = []
    try:
        for n in range(count):
            workers.append(Worker(f"h1-test-{os.getpid()}-{n}", workdir, extra_env))
        yield workers
    finally:
        for worker in workers:
            with suppress(subprocess.TimeoutExpired):
                worker.terminate()
        conf.update(saved)
        _forget_connections()


def _forget_connections() -> None:
    # The app keeps a connection pool made for the broker it first saw: drop it with the URL.
    pools.reset()
    celery_app._pool = None
    amqp = celery_app.__dict__.get("amqp")  # as Celery's own after-fork reset does
    if amqp is not None:
        amqp._producer_pool = None
