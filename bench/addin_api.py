"""How fast does the add-in API answer under load: `suggestions`, and linking a 1 MB email?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench \
        .venv/bin/python bench/addin_api.py [--clients 8] [--seconds 20]

PostgreSQL only, on the population of bench/access.py (1,000,000 records, 300 users; built here
if the database has none). The script migrates the database, backfills the Contacts → Companies
references if they are missing, activates a license (its own vendor key pair, generated per
run), opens one add-in session per client for users of every role depth, starts gunicorn
(2 sync workers, Redis db 15 as the shared cache) and drives it with concurrent clients
(threads, one http.client connection each, kept alive where gunicorn allows): first
`POST suggestions`, then `POST emails` linking a fresh email with a 1 MB attachment.
gunicorn, the temporary files, the sessions and the linked emails are removed at the end,
whatever happens. See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import http.client
import io
import json
import math
import os
import pstats
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402

if TYPE_CHECKING:
    from crm.models import User

SEED = 20261123
API = "/api/addin/v1"
REDIS_URL = "redis://127.0.0.1:6379/15"
WORKERS = 2
TARGET_SUGGESTIONS_P95_MS = 30.0
TARGET_LINK_P95_MS = 150.0
WARMUP_REQUESTS = 3  # per client and phase, not counted
ADDRESS_SAMPLE_PERCENT = 2  # of crm_recordaddress, TABLESAMPLE SYSTEM, repeatable
REFERENCE_SHARE = 0.6  # of the contacts that get a company (same domain) when backfilling
TARGETS_PER_USER = 200  # records a client may link its emails to
MESSAGE_ID_DOMAIN = "addin-bench.invalid"  # marks the emails this benchmark links
SUBJECT_MARK = "[addin-bench] "  # and their change-log lines
ADMIN_USERNAME = "bench-addin-admin"  # exists only while the license is activated
CLIENT_NAME = "bench/addin_api.py"
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "web.de", "gmx.de", "icloud.com")
FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "iris", "jack")
LAST = ("adams", "baker", "clark", "dubois", "evans", "fischer", "garcia", "hughes", "klein")
WORDS = (
    "offer", "quote", "order", "invoice", "delivery", "contract", "price", "discount", "meeting",
    "schedule", "customer", "support", "renewal", "project", "update", "please", "regards",
)  # fmt: skip
# Who the clients are: (role depth, area) taken in turn, the lowest bench user id of each;
# more clients than rows take further users of depths 4-6 in id order.
CLIENT_ROLES: tuple[tuple[int, str], ...] = (
    (1, ""),
    (2, "Sales"),
    (3, "Support"),
    (4, "Marketing"),
    (5, "Sales"),
    (6, "Sales"),
    (6, "Support"),
    (6, "Marketing"),
)
# How the sender of a suggested-for email relates to the CRM's data (weights).
SENDER_KINDS = {
    "known person": 45,  # a contact's or lead's exact address
    "company address": 5,  # a company's own address (info.N@domain)
    "new person at a company": 15,  # unknown address, domain of companies
    "free-mail": 15,  # unknown address at gmail.com and the like
    "unknown domain": 10,  # no record anywhere
    "outgoing": 10,  # the mailbox owner wrote it: from is ignored, to/cc count
}


def say(message: str = "") -> None:
    print(message, flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as bench/access.py)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (users)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    parser.add_argument(
        "--attachment-bytes", type=int, default=1_000_000, help="size of the linked attachment"
    )
    parser.add_argument(
        "--phases",
        default="suggestions,link",
        help="comma-separated: suggestions, link (default both)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile both requests in-process (SQL, cProfile, EXPLAIN) and compare "
        "suggestions with the query-per-step selector of the embedded default (SQLite)",
    )
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not 1 <= args.clients <= 64 or args.seconds <= 0:
        parser.error("use 1 to 64 clients and a positive duration")
    if set(args.phases) - {"suggestions", "link"}:
        parser.error("phases are suggestions and link")
    return args


# --- Environment: one for this process and gunicorn alike -------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_environment(tmp: Path, port: int, public_key: str) -> dict[str, str]:
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        say(
            "Refusing to run without a PostgreSQL DATABASE_URL: this benchmark measures the "
            "production stack. E.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench"
        )
        raise SystemExit(2)
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "LICENSE_PUBLIC_KEY": public_key,
        "CRM_BASE_URL": f"http://127.0.0.1:{port}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MEDIA_ROOT": str(tmp / "media"),
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "crm.settings",
    }


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


# --- Database: migrate, population, references ------------------------------------------------


def prepare_database() -> None:
    from django.core.management import call_command

    from bench import access as population

    population.require_postgres()
    population.ensure_database()
    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    say(f"Migrated ({time.perf_counter() - started:.1f} s).")
    found = population.existing_population()
    if found is None:
        # An empty database: build the population bench/access.py measures (its defaults).
        population.ensure_population(
            argparse.Namespace(records=1_000_000, users=300, rebuild=False)
        )
    else:
        say(
            f"Reusing the population of bench/access.py ({found.records:,} records, "
            f"{found.users} users, built {found.created_at:%Y-%m-%d %H:%M})."
        )
    ensure_addresses()
    ensure_references()


def ensure_addresses() -> None:
    from crm.models import RecordAddress

    count = RecordAddress.objects.count()
    if count == 0:
        say("crm_recordaddress is empty: rebuild the population (bench/access.py --rebuild).")
        raise SystemExit(2)
    say(f"RecordAddress rows: {count:,}.")


def ensure_references() -> None:
    """Contacts → Companies references (company of the same domain) for a share of contacts.

    bench/access.py predates RecordReference; without rows the selector's third step (the
    companies of the contacts found, the contacts of the companies found) would cost nothing.
    Loaded with COPY into the reference index only: the contacts' JSON `data` stays as
    bench/access.py wrote it, so crm_record (which bench/access.py measures) is not rewritten.
    """
    from django.db import connection, transaction

    from crm.models import Field, RecordReference

    company_field = Field.objects.get(module__name="Contacts", name="company")
    existing = RecordReference.objects.filter(field=company_field).count()
    if existing:
        say(f"Contacts → Companies references: {existing:,} (present).")
        return
    started = time.perf_counter()
    contact_email = Field.objects.get(module__name="Contacts", name="email")
    company_email = Field.objects.get(module__name="Companies", name="email")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT record_id, domain FROM crm_recordaddress WHERE field_id = %s "
            "ORDER BY record_id",
            [contact_email.pk],
        )
        contacts = cursor.fetchall()
        cursor.execute(
            "SELECT record_id, domain FROM crm_recordaddress WHERE field_id = %s "
            "ORDER BY record_id",
            [company_email.pk],
        )
        by_domain: dict[str, list[int]] = {}
        for record_id, domain in cursor.fetchall():
            by_domain.setdefault(domain, []).append(record_id)
    rng = random.Random(SEED)
    rows = [
        (record_id, company_field.pk, rng.choice(by_domain[domain]))
        for record_id, domain in contacts
        if rng.random() < REFERENCE_SHARE and domain in by_domain
    ]
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        cursor.copy("COPY crm_recordreference (record_id, field_id, target_id) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) crm_recordreference")
    say(
        f"Backfilled {len(rows):,} Contacts → Companies references for {len(contacts):,} "
        f"contacts with an address ({time.perf_counter() - started:.1f} s)."
    )


# --- Users, license, sessions ---------------------------------------------------------------


@dataclass
class Client:
    user: User
    depth: int
    area: str
    token: str = ""
    session_id: int = 0
    visible_addresses: list[str] = field(default_factory=list)
    targets: list[tuple[str, int]] = field(default_factory=list)  # (module name, record id)

    @property
    def name(self) -> str:
        return self.user.username


def choose_clients(count: int) -> list[Client]:
    from crm.models import User

    users = list(
        User.objects.filter(is_active=True, username__startswith="bench0")
        .exclude(role=None)
        .select_related("role")
        .order_by("pk")
    )

    def area(user: User) -> str:
        assert user.role is not None
        return "" if user.role.depth == 1 else user.role.name.split()[0]

    chosen: list[User] = []
    for depth, wanted_area in CLIENT_ROLES[:count]:
        for user in users:
            assert user.role is not None
            if user.role.depth == depth and area(user) == wanted_area and user not in chosen:
                chosen.append(user)
                break
    extra = [u for u in users if u not in chosen and u.role and u.role.depth >= 4]
    chosen += extra[: count - len(chosen)]
    return [Client(u, u.role.depth if u.role else 0, area(u)) for u in chosen]


def license_clients(clients: list[Client], crm_url: str, private_key: Any) -> None:
    """Activate a key of this run's vendor and give exactly these users a seat."""
    from django.contrib.auth.hashers import make_password

    from crm.models import User
    from licensing import keys
    from licensing import services as licensing

    now = datetime.now(UTC).replace(microsecond=0)
    payload = keys.LicensePayload(
        license_id=f"bench-{uuid.uuid4()}",
        installation="bench/addin_api.py",
        crm_url=keys.normalise_url(crm_url),
        users=len(clients),
        features=(keys.FEATURE_MAILCONNECTOR,),
        issued_at=now,
        expires_at=now + timedelta(days=1),
    )
    User.objects.filter(username=ADMIN_USERNAME).delete()  # left by an interrupted run
    admin = User.objects.create(
        username=ADMIN_USERNAME, is_superuser=True, is_staff=True, password=make_password(None)
    )
    try:
        licensing.activate(actor=admin, key=keys.issue(payload, private_key))
        licensing.set_enabled_users(actor=admin, users=[c.user for c in clients])
    finally:
        admin.delete()  # an extra active user would change bench/access.py's random picks
    say(f"License activated for {len(clients)} users ({payload.license_id}).")


def open_sessions(clients: list[Client]) -> None:
    from mailconnector.auth import issue_tokens

    for client in clients:
        answer = issue_tokens(user=client.user, client=CLIENT_NAME, ip="127.0.0.1")
        client.token = answer["access_token"]
        client.session_id = int(answer["session_id"])


def close_sessions(clients: list[Client]) -> None:
    from mailconnector.models import AddinSession

    AddinSession.objects.filter(pk__in=[c.session_id for c in clients if c.session_id]).delete()


def gather_client_data(clients: list[Client]) -> None:
    """Per client: addresses of records it can see (its own mail comes from them most), and
    records it may edit to link emails to, its own first."""
    from crm import access
    from crm.models import Module, RecordAddress

    modules = {m.name: m for m in Module.objects.filter(accepts_messages=True)}
    for client in clients:
        user = client.user
        for name in ("Contacts", "Leads"):
            module = modules.get(name)
            if module is None or "view" not in access.module_actions(user, module):
                continue
            ids = list(
                access.records(user, module)
                .order_by("-modified_at", "-id")
                .values_list("pk", flat=True)[:TARGETS_PER_USER]
            )
            client.visible_addresses += list(
                RecordAddress.objects.filter(record_id__in=ids).values_list("address", flat=True)
            )
        for module in modules.values():
            if "edit" not in access.module_actions(user, module):
                continue
            editable = access.records(user, module, "edit").order_by("-modified_at", "-id")
            owned = list(
                editable.filter(owner_user=user).values_list("pk", flat=True)[:TARGETS_PER_USER]
            )
            client.targets += [(module.name, pk) for pk in owned]
        if not client.targets:  # owns nothing editable: records shared with him for editing
            for module in modules.values():
                if "edit" in access.module_actions(user, module):
                    shared = access.records(user, module, "edit").values_list("pk", flat=True)
                    client.targets += [(module.name, pk) for pk in shared[:50]]


# --- Address mix for suggestions ----------------------------------------------------------------


@dataclass
class AddressPool:
    people: list[str]  # contacts' and leads' addresses
    companies: list[str]  # companies' own addresses
    company_domains: list[str]
    colleagues: list[str]

    @classmethod
    def load(cls) -> AddressPool:
        from django.db import connection

        from crm.models import User

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT ra.address, ra.domain, m.name FROM crm_recordaddress ra "
                "TABLESAMPLE SYSTEM (%s) REPEATABLE (%s) "
                "JOIN crm_record r ON r.id = ra.record_id "
                "JOIN crm_module m ON m.id = r.module_id "
                "WHERE r.deleted_at IS NULL ORDER BY ra.id",
                [ADDRESS_SAMPLE_PERCENT, SEED % 1000],
            )
            rows = cursor.fetchall()
        people = [a for a, _, m in rows if m in ("Contacts", "Leads")]
        companies = [a for a, _, m in rows if m == "Companies"]
        domains = sorted({d for _, d, m in rows if m == "Companies"})
        colleagues = list(
            User.objects.filter(username__startswith="bench0").values_list("email", flat=True)
        )
        return cls(people, companies, domains, colleagues)


def sender_for(kind: str, client: Client, pool: AddressPool, rng: random.Random) -> str:
    person = f"{rng.choice(FIRST)}.{rng.choice(LAST)}.{rng.randrange(10**6)}"
    if kind == "known person":
        mine = client.visible_addresses
        return rng.choice(mine) if mine and rng.random() < 0.7 else rng.choice(pool.people)
    if kind == "company address":
        return rng.choice(pool.companies)
    if kind == "new person at a company":
        return f"{person}@{rng.choice(pool.company_domains)}"
    if kind == "free-mail":
        return f"{person}@{rng.choice(FREE_MAIL)}"
    return f"{person}@{secrets.token_hex(4)}-unknown.example"


def suggestion_body(client: Client, pool: AddressPool, rng: random.Random) -> dict[str, Any]:
    """What the add-in sends for the email open in Outlook: from, to, cc, the mailbox owner."""
    kinds, weights = zip(*SENDER_KINDS.items(), strict=True)
    kind = rng.choices(kinds, weights=weights)[0]
    owner = client.user.email
    addresses: list[dict[str, str]] = []
    if kind == "outgoing":
        addresses.append({"email": owner, "role": "from"})
        addresses.append({"email": sender_for("known person", client, pool, rng), "role": "to"})
    else:
        addresses.append({"email": sender_for(kind, client, pool, rng), "role": "from"})
        addresses.append({"email": owner, "role": "to"})
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        addresses.append({"email": rng.choice(pool.colleagues), "role": rng.choice(("to", "cc"))})
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        other = rng.choice(("known person", "new person at a company", "free-mail"))
        addresses.append({"email": sender_for(other, client, pool, rng), "role": "cc"})
    return {
        "addresses": addresses,
        "mailbox_owner": owner,
        "message_id": f"<{uuid.uuid4()}@mail.example>",
    }


# --- The 1 MB email ---------------------------------------------------------------------------


class EmailMaker:
    """Unique emails fast: a random 1 MB attachment made unique by its first bytes.

    The client shares the server's two cores, so it encodes the attachment once: base64 lines
    hold 57 bytes each, and only the first line differs from one email to the next (the bytes
    are the same as encoding the whole attachment each time).
    """

    LINE = 57  # bytes of input per base64 line (base64.encodebytes)

    def __init__(self, attachment_bytes: int, rng: random.Random) -> None:
        self.rng = rng
        self.pool = rng.randbytes(attachment_bytes)
        self.encoded_tail = base64.encodebytes(self.pool[self.LINE :]).replace(b"\n", b"\r\n")

    def make(self, sender: str, to: str, message_id: str) -> bytes:
        rng = self.rng
        unique = b"%PDF-1.4\n%" + uuid.uuid4().bytes
        first = unique + self.pool[len(unique) : self.LINE]
        encoded = base64.encodebytes(first).replace(b"\n", b"\r\n") + self.encoded_tail
        boundary = f"=_bench_{uuid.uuid4().hex}"
        text = "\r\n".join(
            " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(25)
        )
        subject = f"{SUBJECT_MARK}Re: {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.randrange(9999)}"
        head = (
            f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(datetime.now(UTC))}\r\nMessage-ID: {message_id}\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: application/pdf; name=quote.pdf\r\n"
            "Content-Disposition: attachment; filename=quote.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
        )
        return head.encode() + encoded + f"\r\n--{boundary}--\r\n".encode()


def multipart(links: list[dict[str, Any]], raw: bytes) -> tuple[bytes, str]:
    boundary = f"bench{uuid.uuid4().hex}"
    body = b"".join(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="links"\r\n\r\n'.encode(),
            json.dumps(links).encode(),
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="eml"; '
            'filename="message.eml"\r\nContent-Type: message/rfc822\r\n\r\n'.encode(),
            raw,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    return body, f"multipart/form-data; boundary={boundary}"


# --- gunicorn -----------------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn in its own process group; always stopped (TERM, then KILL) on the way out."""
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "crm.wsgi",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "--access-logfile",
        str(log_path.with_name("access.log")),
        "--access-logformat",
        "%(m)s %(U)s %(s)s %(D)s",  # method, path, status, microseconds in the worker
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, port, log_path)
        yield process
    finally:
        stop_group(process)


def wait_until_up(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            say(log_path.read_text(errors="replace")[-3000:])
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"{API}/meta")
            response = conn.getresponse()
            body = response.read()
            conn.close()
        except OSError:
            time.sleep(0.2)
            continue
        if response.status != 200:
            raise SystemExit(f"meta answered {response.status}: {body[:500]!r}")
        license_state = json.loads(body)["license"]
        if not license_state["active"]:
            raise SystemExit(f"gunicorn sees no active license: {license_state}")
        return
    raise SystemExit("gunicorn did not answer within 60 s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    pgid = process.pid  # start_new_session: the group is the master's pid
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)  # workers left behind?
            except ProcessLookupError:
                return
            time.sleep(0.1)


# --- Load -------------------------------------------------------------------------------------


@dataclass
class Sample:
    ms: float
    status: int
    detail: str = ""


@dataclass
class PhaseResult:
    name: str
    samples: list[Sample]
    seconds: float
    load_before: str
    load_after: str
    by_user: dict[str, list[float]] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)  # from gunicorn's access log
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: gunicorn, PostgreSQL, client

    @property
    def ok_ms(self) -> list[float]:
        return [s.ms for s in self.samples if 200 <= s.status < 300]

    @property
    def errors(self) -> list[Sample]:
        return [s for s in self.samples if not 200 <= s.status < 300]


Request = Callable[[http.client.HTTPConnection], Sample]


def timed(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> Sample:
    started = time.perf_counter()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return Sample((time.perf_counter() - started) * 1000, 0, repr(exc))
    ms = (time.perf_counter() - started) * 1000
    if response.will_close:
        conn.close()  # sync workers close after each answer; the next request reconnects
    detail = "" if 200 <= response.status < 300 else data[:300].decode(errors="replace")
    return Sample(ms, response.status, detail)


def _cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (Linux /proc), 0 for those gone."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def _backends() -> list[int]:
    """PostgreSQL backends serving the bench database (gunicorn's workers), not this process."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def cpu_snapshot(server_pgid: int) -> dict[str, float]:
    return {
        "gunicorn": _cpu_seconds(_group(server_pgid)),
        "PostgreSQL": _cpu_seconds(_backends()),
        "client": time.process_time(),
    }


def run_phase(
    name: str,
    port: int,
    clients: list[Client],
    makers: list[Request],
    seconds: float,
    access_log: Path,
    server_pgid: int,
) -> PhaseResult:
    """Every client warms up, then all start together and loop for `seconds`."""
    barrier = threading.Barrier(len(clients) + 1)
    samples: list[list[Sample]] = [[] for _ in clients]
    failures: list[BaseException] = []
    deadline = [0.0]

    def work(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(WARMUP_REQUESTS):
                makers[index](conn)
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                samples[index].append(makers[index](conn))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    load_before = load()
    deadline[0] = time.perf_counter() + 3600  # set for real once everybody is warm
    with contextlib.suppress(threading.BrokenBarrierError):  # a failure: reported below
        barrier.wait(timeout=600)
    started = time.perf_counter()
    deadline[0] = started + seconds
    log_from = access_log.stat().st_size
    cpu_before = cpu_snapshot(server_pgid)
    for thread in threads:
        thread.join(timeout=seconds + 180)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_snapshot(server_pgid)
    time.sleep(0.3)  # the last lines of the access log
    with access_log.open("rb") as log:
        log.seek(log_from)
        lines = log.read().decode(errors="replace").splitlines()
    if failures:
        raise RuntimeError(f"a client failed in phase {name}") from failures[0]
    result = PhaseResult(name, [s for per in samples for s in per], elapsed, load_before, load())
    result.cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
    for client, per in zip(clients, samples, strict=True):
        result.by_user[client.name] = [s.ms for s in per if 200 <= s.status < 300]
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "POST" and parts[2].startswith("2"):
            result.server_ms.append(int(parts[3]) / 1000)
    return result


def suggestions_request(client: Client, pool: AddressPool, seed: int) -> Request:
    rng = random.Random(seed)
    headers = {
        "Authorization": f"Bearer {client.token}",
        "Content-Type": "application/json",
        "X-Addin-Version": "1.0.0",
    }

    def call(conn: http.client.HTTPConnection) -> Sample:
        body = json.dumps(suggestion_body(client, pool, rng)).encode()
        return timed(conn, f"{API}/suggestions", body, headers)

    return call


def link_request(client: Client, attachment_bytes: int, seed: int, sizes: list[int]) -> Request:
    rng = random.Random(seed)
    maker = EmailMaker(attachment_bytes, rng)

    def call(conn: http.client.HTTPConnection) -> Sample:
        module, record_id = rng.choice(client.targets)
        message_id = f"<{uuid.uuid4()}@{MESSAGE_ID_DOMAIN}>"
        sender = rng.choice(client.visible_addresses or ["someone@customer.example"])
        raw = maker.make(sender, client.user.email, message_id)
        body, content_type = multipart([{"module": module, "id": record_id}], raw)
        sizes.append(len(raw))
        headers = {
            "Authorization": f"Bearer {client.token}",
            "Content-Type": content_type,
            "Idempotency-Key": message_id,
            "X-Addin-Version": "1.0.0",
        }
        return timed(conn, f"{API}/emails", body, headers)

    return call


def remove_linked_emails() -> int:
    """The emails this benchmark linked (and their documents, links and change-log lines)."""
    from django.db import transaction

    from crm.models import Attachment, ChangeLog, Document, Message

    with transaction.atomic():
        ids = list(
            Message.objects.filter(message_id__endswith=f"@{MESSAGE_ID_DOMAIN}").values_list(
                "pk", flat=True
            )
        )
        if not ids:
            return 0
        documents = list(
            Attachment.objects.filter(message_id__in=ids).values_list("document_id", flat=True)
        )
        ChangeLog.objects.filter(
            action=ChangeLog.Action.LINK, changes__message__1__startswith=SUBJECT_MARK
        ).delete()
        Message.objects.filter(pk__in=ids).delete()
        Document.objects.filter(pk__in=documents, attachments=None).delete()
    return len(ids)


# --- Report -----------------------------------------------------------------------------------


def report(result: PhaseResult, target_ms: float, what: str) -> bool:
    ok = result.ok_ms
    errors = result.errors
    say(f"\n{what} (load average before {result.load_before}, after {result.load_after})")
    say(
        f"  requests {len(result.samples)}, errors (non-2xx) {len(errors)}, "
        f"throughput {len(result.samples) / result.seconds:.1f}/s over {result.seconds:.1f} s"
    )
    if ok:
        say(
            f"  p50 {percentile(ok, 0.5):.1f} ms   p95 {percentile(ok, 0.95):.1f} ms   "
            f"p99 {percentile(ok, 0.99):.1f} ms   max {max(ok):.1f} ms"
        )
        per_user = "  ".join(
            f"{name} {percentile(v, 0.5):.0f}/{percentile(v, 0.95):.0f}"
            for name, v in result.by_user.items()
            if v
        )
        say(f"  per client p50/p95 ms: {per_user}")
    if result.server_ms:
        server = result.server_ms
        say(
            f"  in the worker (gunicorn's request time, without the wait for a free worker): "
            f"p50 {percentile(server, 0.5):.1f} ms   p95 {percentile(server, 0.95):.1f} ms   "
            f"({len(server)} lines)"
        )
    if result.cpu and result.samples:
        n = len(result.samples)
        say(
            "  CPU per request: "
            + ", ".join(f"{k} {v * 1000 / n:.1f} ms" for k, v in result.cpu.items())
            + f" (2 cores = {2 * result.seconds * 1000 / n:.1f} ms of CPU per request available)"
        )
    for (status, detail), n in Counter((s.status, s.detail) for s in errors).most_common(3):
        say(f"  error x{n}: {status} {detail}")
    p95 = percentile(ok, 0.95) if ok else math.inf
    met = not errors and p95 < target_ms
    say(f"  target p95 < {target_ms:.0f} ms and no error: {'MET' if met else 'NOT MET'}")
    return met


def describe(clients: list[Client], pool: AddressPool, args: argparse.Namespace) -> None:
    from django.db import connection

    from crm import access

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
            "(SELECT count(*) FROM crm_record), (SELECT count(*) FROM crm_recordaddress), "
            "(SELECT count(*) FROM crm_recordreference)"
        )
        version, buffers, records, addresses, references = cursor.fetchone()
    say(
        f"PostgreSQL {version} (shared_buffers {buffers}): {records:,} records, "
        f"{addresses:,} addresses, {references:,} references. gunicorn {WORKERS} sync workers, "
        f"{args.clients} clients, {args.seconds:g} s per phase, {WARMUP_REQUESTS} warm-up "
        "requests per client."
    )
    say(machine.reference())
    say(
        f"Address sample: {len(pool.people):,} people, {len(pool.companies):,} companies, "
        f"{len(pool.company_domains):,} company domains; sender mix "
        + ", ".join(f"{k} {v}%" for k, v in SENDER_KINDS.items())
    )
    say("Clients (user, role depth, area, owners visible in Contacts, link targets):")
    contacts = _module_id("Contacts")
    for c in clients:
        scope = access._scope(access.privileges(c.user), contacts, "view")
        owners = (
            f"{len(scope.users)}u/{len(scope.groups)}g"
            if isinstance(scope, access.Owners)
            else "all"
        )
        say(
            f"  {c.name}  depth {c.depth}  {c.area or '-':<9}  Contacts owners {owners:>8}  "
            f"targets {len(c.targets)}"
        )


def _module_id(name: str) -> int:
    from crm.models import Module

    return int(Module.objects.get(name=name).pk)


# --- In-process profile ------------------------------------------------------------------------


def _shape(sql: str) -> str:
    """The statement with its IN lists collapsed, to group the queries of many calls."""
    return re.sub(r"IN \((?:%s, )*%s\)", "IN (...)", " ".join(sql.split()))


@dataclass
class SqlTimer:
    """A database execute wrapper: every statement, its parameters and its wall time."""

    calls: list[tuple[str, Any, float]] = field(default_factory=list)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.calls.append((sql, params, (time.perf_counter() - started) * 1000))


@dataclass
class InProcess:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    shapes: dict[str, list[float]] = field(default_factory=dict)
    examples: dict[str, tuple[str, Any]] = field(default_factory=dict)
    answers: list[bytes] = field(default_factory=list)

    def line(self, label: str) -> str:
        return (
            f"  {label:<12} wall p50 {percentile(self.wall, 0.5):6.2f} p95 "
            f"{percentile(self.wall, 0.95):6.2f} | CPU p50 {percentile(self.cpu, 0.5):6.2f} "
            f"p95 {percentile(self.cpu, 0.95):6.2f} | SQL p50 {percentile(self.sql, 0.5):6.2f} "
            f"p95 {percentile(self.sql, 0.95):6.2f} ms | queries/request "
            f"{sum(self.queries) / len(self.queries):.1f}"
        )


# (client, path, body, content type, extra headers)
Call = tuple[Client, str, bytes, str, dict[str, str]]


def measure_in_process(calls: list[Call]) -> InProcess:
    """Each request through Django's whole stack (middleware, DRF, auth, license, view)."""
    from django.db import connection
    from django.test import Client as TestClient

    browsers = {
        c.name: TestClient(
            HTTP_HOST="127.0.0.1",
            HTTP_AUTHORIZATION=f"Bearer {c.token}",
            HTTP_X_ADDIN_VERSION="1.0.0",
        )
        for c, *_ in calls
    }
    out = InProcess()
    for client, path, body, content_type, headers in calls:
        timer = SqlTimer()
        with connection.execute_wrapper(timer):
            wall, cpu = time.perf_counter(), time.process_time()
            response = browsers[client.name].generic(
                "POST" if body else "GET", path, body, content_type=content_type, headers=headers
            )
            out.wall.append((time.perf_counter() - wall) * 1000)
            out.cpu.append((time.process_time() - cpu) * 1000)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"in-process {path}: {response.status_code} {response.content!r}")
        out.answers.append(response.content)
        out.sql.append(sum(ms for *_, ms in timer.calls))
        out.queries.append(len(timer.calls))
        for sql, params, ms in timer.calls:
            out.shapes.setdefault(_shape(sql), []).append(ms)
            out.examples.setdefault(_shape(sql), (sql, params))
    return out


def suggestion_calls(clients: list[Client], pool: AddressPool, runs: int) -> list[Call]:
    rng = random.Random(SEED + 1)
    return [
        (
            c,
            f"{API}/suggestions",
            json.dumps(suggestion_body(c, pool, rng)).encode(),
            "application/json",
            {},
        )
        for _ in range(runs)
        for c in clients
    ]


def link_calls(clients: list[Client], attachment_bytes: int, runs: int) -> list[Call]:
    rng = random.Random(SEED + 2)
    maker = EmailMaker(attachment_bytes, rng)
    calls: list[Call] = []
    for _ in range(runs):
        for c in clients:
            module, record_id = rng.choice(c.targets)
            message_id = f"<{uuid.uuid4()}@{MESSAGE_ID_DOMAIN}>"
            raw = maker.make(rng.choice(c.visible_addresses), c.user.email, message_id)
            body, content_type = multipart([{"module": module, "id": record_id}], raw)
            calls.append((c, f"{API}/emails", body, content_type, {"Idempotency-Key": message_id}))
    return calls


def print_profile(calls: list[Call], top: int = 22) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    measure_in_process(calls)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(
        r"(mailconnector|crm/|licensing|rest_framework/views|cache/backends|multipartparser"
        r"|email/feedparser|email/parser|storage)",
        top,
    )
    stats.sort_stats("tottime").print_stats(15)
    for part in out.getvalue().split("   ncalls")[1:]:
        say("   ncalls" + part.rstrip())


def print_shapes(result: InProcess, requests: int, limit: int = 10) -> str:
    say("  queries by shape: per request, p50/p95 ms, statement")
    ranked = sorted(result.shapes.items(), key=lambda kv: -sum(kv[1]))
    for shape, times in ranked[:limit]:
        say(
            f"    {len(times) / requests:4.2f}x {percentile(times, 0.5):6.2f} "
            f"{percentile(times, 0.95):6.2f}  {shape[:160]}"
        )
    return ranked[0][0]


def prepared_statements() -> None:
    """Which statements this connection has prepared, and how PostgreSQL planned them: a
    statement whose text differs per user (or per owner count) would show once per variant."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans, left(regexp_replace(statement, '\\s+', ' ', "
            "'g'), 110) FROM pg_prepared_statements ORDER BY generic_plans + custom_plans DESC"
        )
        rows = cursor.fetchall()
    say(f"  prepared statements on this connection: {len(rows)}; most run (generic/custom plans):")
    for generic, custom, text in rows[:4]:
        say(f"    {generic:5d} / {custom:5d}  {text.strip()}")


def explain(sql: str, params: Any) -> None:
    from django.db import connection

    say(f"  EXPLAIN (ANALYZE, BUFFERS) {sql[:600]}")
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        say("\n".join("    " + row[0] for row in cursor.fetchall()))


def profile(clients: list[Client], pool: AddressPool, args: argparse.Namespace) -> None:
    """Where the requests spend their time, in this process, one at a time, caches warm."""
    calls = suggestion_calls(clients, pool, runs=40)
    say(f"\nIn-process profile, one request at a time (load average {load()})")
    say(f"POST suggestions, {len(calls)} requests:")
    measure_in_process(calls[: 2 * len(clients)])  # warm caches and connection
    base = measure_in_process(calls)
    say(base.line("as is"))
    worst = print_shapes(base, len(calls))
    print_profile(calls)
    prepared_statements()
    explain(*base.examples[worst])
    floor_calls: list[Call] = [(c, f"{API}/modules", b"", "", {}) for c, *_ in calls]
    measure_in_process(floor_calls[: 2 * len(clients)])
    say("  Floor: GET modules (the same authentication, license check, privileges, one query):")
    say(measure_in_process(floor_calls).line("GET modules"))
    compare_with_multi_query(calls, clients, base)

    link = link_calls(clients, args.attachment_bytes, runs=3)
    say(f"\nPOST emails, {len(link)} requests (email {len(link[0][2]) / 1e6:.2f} MB on the wire):")
    measured = measure_in_process(link)
    say(measured.line("as is"))
    print_shapes(measured, len(link), limit=8)
    print_profile(link_calls(clients, args.attachment_bytes, runs=2), top=30)
    floor_calls = link_calls(clients, args.attachment_bytes, runs=3)
    with parse_done_before(floor_calls):
        floor = measure_in_process(floor_calls)
    say("  Floor: the same with the email parsed beforehand (untimed), what parsing costs:")
    say(floor.line("parse free"))


def compare_with_multi_query(calls: list[Call], clients: list[Client], base: Any) -> None:
    """The selector is one statement now: its answers against the query-per-step selector."""
    with multi_query_suggestions():
        measure_in_process(calls[: 2 * len(clients)])
        before = measure_in_process(calls)
    say("\nThe query-per-step selector (the embedded default's, the reference):")
    say(before.line("query per step"))
    say(base.line("as is"))
    same = sum(a == b for a, b in zip(before.answers, base.answers, strict=True))
    say(f"  same answers as the query-per-step selector for {same} of {len(calls)} requests")


@contextlib.contextmanager
def parse_done_before(calls: list[Call]) -> Iterator[None]:
    """crm.services.ingest with each email's parse done before the request (a diagnostic)."""
    from crm.email import parse as parse_module
    from crm.services import ingest

    parsed: dict[bytes, Any] = {}
    for *_, body, content_type, _ in calls:
        boundary = content_type.partition("boundary=")[2].encode()
        raw = body.split(b"\r\n\r\n", 2)[2].rpartition(b"\r\n--" + boundary)[0]
        parsed[raw] = parse_module.parse(raw)
    original = ingest.parse

    def parse(raw: bytes) -> Any:
        found = parsed.get(raw)
        return found if found is not None else original(raw)

    ingest.parse = parse  # type: ignore[assignment]
    try:
        yield
    finally:
        ingest.parse = original  # type: ignore[assignment]


# --- The query-per-step selector (the embedded default's), the reference -----------------------


@contextlib.contextmanager
def multi_query_suggestions() -> Iterator[None]:
    """selectors.suggestions as the embedded default runs it (a query per step and per module
    found, `mailconnector.suggestions_by_step`), to check that the statement gives the same
    answers and to time both."""
    from mailconnector import selectors

    original = selectors.suggestions
    selectors.suggestions = _suggestions_multi_query  # type: ignore[assignment]
    try:
        yield
    finally:
        selectors.suggestions = original  # type: ignore[assignment]


def _suggestions_multi_query(
    user: Any, addresses: Any, *, ignore: Any = (), message_id: str | None = None
) -> list[Any]:
    from mailconnector import selectors
    from mailconnector.suggestions_by_step import suggestions_by_step

    wanted = selectors.wanted_addresses(user, addresses, ignore)
    return suggestions_by_step(user, wanted, message_id) if wanted else []


# --- Main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from licensing import keys  # no Django needed: the vendor's key pair

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    tmp = Path(tempfile.mkdtemp(prefix="addin-bench-"))
    clients: list[Client] = []
    try:
        private_key = keys.generate_private_key()
        port = free_port()
        env = bench_environment(tmp, port, keys.public_key_b64(private_key.public_key()))
        setup_django(env)
        prepare_database()
        removed = remove_linked_emails()
        if removed:
            say(f"Removed {removed} emails left by an earlier run.")
        clients = choose_clients(args.clients)
        license_clients(clients, env["CRM_BASE_URL"], private_key)
        open_sessions(clients)
        gather_client_data(clients)
        if any(not c.targets for c in clients):
            raise SystemExit("a client has no record it may edit")
        pool = AddressPool.load()
        describe(clients, pool, args)
        flush_cache()
        results: list[bool] = []
        errors = 0
        log_path = tmp / "gunicorn.log"
        access_log = tmp / "access.log"
        with gunicorn(env, port, log_path) as server:
            variant = "the code as is"
            say(f"gunicorn up on 127.0.0.1:{port}, serving {variant}.")
            if "suggestions" in args.phases:
                makers = [suggestions_request(c, pool, SEED + i) for i, c in enumerate(clients)]
                result = run_phase(
                    "suggestions", port, clients, makers, args.seconds, access_log, server.pid
                )
                results.append(report(result, TARGET_SUGGESTIONS_P95_MS, "POST suggestions"))
                errors += len(result.errors)
            if "link" in args.phases:
                sizes: list[int] = []
                makers = [
                    link_request(c, args.attachment_bytes, SEED + 100 + i, sizes)
                    for i, c in enumerate(clients)
                ]
                result = run_phase(
                    "link", port, clients, makers, args.seconds, access_log, server.pid
                )
                size = sum(sizes) / max(1, len(sizes))
                errors += len(result.errors)
                results.append(
                    report(
                        result,
                        TARGET_LINK_P95_MS,
                        f"POST emails (link one email of {size / 1e6:.2f} MB, "
                        f"{args.attachment_bytes / 1e6:g} MB attachment, to one record)",
                    )
                )
            if server.poll() is not None or errors:
                tail = log_path.read_text(errors="replace").splitlines()[-40:]
                say("\ngunicorn's log (last lines):\n" + "\n".join(tail))
        if args.profile:
            profile(clients, pool, args)
        if results:
            say(f"\nOverall: {'all targets MET' if all(results) else 'a target is NOT MET'}.")
    finally:
        cleanup(clients, tmp)


def flush_cache() -> None:
    from django.core.cache import cache

    cache.clear()  # Redis db 15 only: FLUSHDB on the bench's database


def cleanup(clients: list[Client], tmp: Path) -> None:
    try:
        if clients:
            close_sessions(clients)
            removed = remove_linked_emails()
            say(f"Cleaned up: {len(clients)} sessions, {removed} linked emails, {tmp}.")
    except Exception as exc:  # the temporary files go whatever happened
        say(f"Clean-up of the database failed: {exc!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
