"""How fast does the mail converter turn a mailbox into tickets, next to a bare IMAP fetch and
parse of the same mailbox; how much memory does a scan take; what does a scan cost when there
is no new mail, or ten new messages in a 50,000-message mailbox?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm \
        .venv/bin/python bench/converter.py [--messages 5000] [--big 50000] [--quick] [--rounds 3]

DATABASE_URL names the PostgreSQL server; the benchmark drops and recreates its own database
there (`--database`, default crm_bench_converter) and refuses any other name that holds users.
A private Dovecot (the tests' `Dovecot`, on free loopback ports, in a temporary directory)
serves two accounts whose Maildirs are written directly (files in cur/, then one SELECT lets
Dovecot index them): APPENDing 50,000 messages would take longer than the measurement.
Everything measured runs in a fresh child process of this script, which prints one JSON line to
the parent: the parent never holds the corpus, so each child's `ru_maxrss` is its own.
The throughput is measured in rounds (bare, scan, bare, each round on a new database): the
machine's speed drifts over minutes, so the round with the median ratio is reported, with
every round's ratio and the most memory any round took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.ingest import LATIN, attachment, bare_parse, log_uniform, paragraphs  # noqa: E402

SEED = 20261203
TARGET_RATIO = 0.6  # scan rate / bare fetch + parse rate
TARGET_RSS_MB = 300
TARGET_IDLE_SECONDS = 1.0
CONTACTS = 200  # senders known as Contacts (their companies by domain)
COMPANIES = 20
FETCH_BATCH = 50  # the bare fetch's batch, as CONVERTER_FETCH_BATCH
OWN_ADDRESS = "support@crm.example"
MB = 1_000_000


def say(message: str = "") -> None:
    print(message, flush=True)


# --- The corpus: deterministic, streamed into Maildir files -------------------------------------


def contact_address(n: int) -> tuple[str, str]:
    company = n % COMPANIES
    return f"Customer {n}", f"person{n}@company{company}.example"


def make_message(rng: random.Random, index: int, prefix: str) -> bytes:
    """One email; kinds in proportion: new requests, replies, quote requests, auto-replies."""
    kind = rng.choices(["new", "reply", "quote", "auto"], weights=[60, 20, 15, 5])[0]
    with_files = rng.random() < 0.2
    msg = EmailMessage()
    sent = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=7 * index)
    for hop in range(rng.randint(2, 5)):
        msg["Received"] = (
            f"from mx{hop}.example.net ([192.0.2.{hop}]) by mail.crm.example with ESMTPS id "
            f"{rng.getrandbits(48):012x}; {sent.strftime('%a, %d %b %Y %H:%M:%S +0000')}"
        )
    if rng.random() < 0.5:  # a known contact, round robin: no sender reaches the ticket limit
        name, address = contact_address(index % CONTACTS)
    else:
        name, address = f"Visitor {index}", f"visitor{index}@mail{index % 500}.example"
    msg["From"] = f"{name} <{address}>"
    msg["To"] = OWN_ADDRESS
    words = " ".join(rng.choice(LATIN) for _ in range(rng.randint(3, 8)))
    subject = {"new": words, "quote": f"Request for quote: {words}", "auto": f"Re: {words}"}
    if kind == "reply" and index > 10:
        earlier = rng.randrange(max(0, index - 200), index)
        msg["In-Reply-To"] = f"<{prefix}-{earlier}@bench.example>"
        msg["References"] = msg["In-Reply-To"]
        subject["reply"] = f"Re: {words}"
    msg["Subject"] = subject.get(kind, words)
    if kind == "auto":
        msg["Auto-Submitted"] = "auto-replied"
    msg["Date"] = sent.strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg["Message-ID"] = f"<{prefix}-{index}@bench.example>"
    size = log_uniform(rng, 1_000, 60_000)
    lines = paragraphs(rng, LATIN, size)
    text = "\n".join(lines) + "\n"
    msg.set_content(text, cte="quoted-printable")
    if rng.random() < 0.6:
        html = "<html><body>" + "".join(f"<p>{line}</p>\n" for line in lines) + "</body></html>\n"
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    if with_files:
        for _ in range(rng.randint(1, 2)):
            kind_of_file = rng.choice(("pdf", "png", "docx"))
            data, maintype, subtype, filename = attachment(
                rng, kind_of_file, log_uniform(rng, 10_000, 400_000)
            )
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    for number, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_conv_{index}_{number}_{rng.getrandbits(32):08x}")
    return msg.as_bytes(policy=SMTP)


def small_message(index: int, prefix: str) -> bytes:
    """Filler for the big mailbox: only its size matters there."""
    return (
        f"From: Archive {index} <archive{index % 1000}@old.example>\r\n"
        f"To: {OWN_ADDRESS}\r\nSubject: archived message {index}\r\n"
        f"Date: Mon, 05 Jan 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{prefix}-{index}@bench.example>\r\n\r\n"
        f"Archived text number {index}.\r\n"
    ).encode()


def write_maildir(home: Path, messages: Iterator[bytes], ids: tuple[int, int]) -> tuple[int, int]:
    """Files in Maildir/cur as Dovecot names them (S= size on disk, W= size with CRLF)."""
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
        os.chown(maildir / sub, *ids)
    os.chown(maildir, *ids)
    count = total = 0
    stamp = int(time.time()) - 86_400
    for raw in messages:
        on_disk = raw.replace(b"\r\n", b"\n")
        name = f"{stamp + count}.M{count}P1.bench,S={len(on_disk)},W={len(raw)}:2,"
        path = maildir / "cur" / name
        path.write_bytes(on_disk)
        os.chown(path, *ids)
        count += 1
        total += len(raw)
    return count, total


# --- Children: each measurement in its own process ----------------------------------------------


def child(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh process; `pss_mb` is the peak, sampled every 50 ms, of
    the summed PSS of it and its children (pages shared by forked workers counted once)."""
    command = [sys.executable, __file__, "--child", name, "--config", json.dumps(config)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        say(stdout[-3000:])
        say(stderr[-6000:])
        raise SystemExit(f"child {name} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    result["pss_mb"] = peak[0]
    return result


def tree_pss_mb(pid: int) -> float:
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue  # it ended meanwhile
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django

    django.setup()


def child_setup(config: dict[str, Any]) -> dict[str, Any]:
    """A new database, an owner, Contacts and Companies, the two mailboxes with their rules."""
    recreate_database(config["database_url"])
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from crm.models import Module, User
    from crm.services import records
    from mailconverter.models import Folder, Mailbox, Rule

    owner = User.objects.create_superuser("bench-converter", "owner@crm.example", "x")
    companies = Module.objects.get(name="Companies")
    contacts = Module.objects.get(name="Contacts")
    made = []
    for n in range(COMPANIES):
        made.append(
            records.create(
                actor=owner,
                module=companies,
                data={"name": f"Company {n}", "email": f"info@company{n}.example"},
            )
        )
    for n in range(CONTACTS):
        name, address = contact_address(n)
        records.create(
            actor=owner,
            module=contacts,
            data={
                "first_name": "Customer",
                "last_name": str(n),
                "email": address,
                "company": made[n % COMPANIES].pk,
            },
        )
    ids = {}
    for key, user in (("main", config["main_user"]), ("big", config["big_user"])):
        mailbox = Mailbox(
            name=f"bench {key}",
            host="127.0.0.1",
            port=config["port"],
            security=Mailbox.Security.NONE,
            username=user,
            address=OWN_ADDRESS,
            owner=owner,
            after_scan=Mailbox.AfterScan.MARK_READ,
        )
        mailbox.set_password(config["password"])
        mailbox.save()
        Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
        for position, (name, conditions, actions) in enumerate(RULES):
            Rule.objects.create(
                mailbox=mailbox,
                position=position,
                name=name,
                match="any",
                conditions=conditions,
                actions=actions,
            )
        ids[key] = mailbox.pk
    return ids


RULES: list[tuple[str, list[dict[str, str]], list[dict[str, Any]]]] = [
    ("Replies update their ticket", [], [{"type": "update_ticket"}]),
    (
        "Quotes are linked to the customer",
        [{"field": "subject", "operator": "contains", "value": "request for quote"}],
        [
            {"type": "link", "module": "Contacts", "by": "sender"},
            {"type": "link", "module": "Companies", "by": "sender"},
        ],
    ),
    ("Everything else opens a ticket", [], [{"type": "create_ticket"}]),
]


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    server = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def child_seed_cursor(config: dict[str, Any]) -> dict[str, Any]:
    """The big mailbox as if scanned before: its cursor at the last UID and a ledger row per
    message (bulk-inserted: converting 50,000 messages is not what this part measures)."""
    import secrets

    setup_django()
    from django.utils import timezone
    from imapclient import IMAPClient

    from mailconverter.models import Folder, LedgerEntry, Outcome

    with IMAPClient("127.0.0.1", port=config["port"], ssl=False) as imap:
        imap.login(config["big_user"], config["password"])
        answer = imap.select_folder("INBOX", readonly=True)
        uids = imap.search("ALL")
    validity = int(answer[b"UIDVALIDITY"])
    folder = Folder.objects.get(mailbox_id=config["big"], name="INBOX")
    now = timezone.now()
    rows = (
        LedgerEntry(
            mailbox_id=config["big"],
            folder=folder,
            uidvalidity=validity,
            uid=uid,
            identity=secrets.token_hex(32),
            outcome=Outcome.IGNORED,
            created_at=now,
            processed_at=now,
        )
        for uid in uids
    )
    batch: list[LedgerEntry] = []
    for row in rows:
        batch.append(row)
        if len(batch) == 5000:
            LedgerEntry.objects.bulk_create(batch)
            batch = []
    LedgerEntry.objects.bulk_create(batch)
    Folder.objects.filter(pk=folder.pk).update(uidvalidity=validity, last_uid=max(uids))
    return {"messages": len(uids), "last_uid": max(uids)}


def child_bare(config: dict[str, Any]) -> dict[str, Any]:
    """What any program reading this mailbox has to do: fetch every message, parse it, read
    every header, the body and every attachment (bench/ingest.py's bare parse)."""
    from imapclient import IMAPClient

    started, cpu = time.perf_counter(), time.process_time()
    count = total = 0
    with IMAPClient("127.0.0.1", port=config["port"], ssl=False, timeout=60) as imap:
        imap.login(config["main_user"], config["password"])
        imap.select_folder("INBOX", readonly=True)
        uids = sorted(imap.search("ALL"))
        for start in range(0, len(uids), FETCH_BATCH):
            answer = imap.fetch(uids[start : start + FETCH_BATCH], [b"BODY.PEEK[]"])
            for uid in uids[start : start + FETCH_BATCH]:
                raw = answer[uid][b"BODY[]"]
                bare_parse(raw)
                count += 1
                total += len(raw)
    return {
        "messages": count,
        "bytes": total,
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "rss_mb": peak_rss_mb(),
    }


def child_scan(config: dict[str, Any]) -> dict[str, Any]:
    if config.get("profile") or config.get("statements"):
        # Profiles and statement counts see this process only: convert in it.
        os.environ["CONVERTER_WORKERS"] = "1"
    setup_django()
    from django.conf import settings
    from django.db import connection

    from mailconverter import scanner
    from mailconverter.models import Mailbox

    mailbox = Mailbox.objects.get(pk=config["mailbox"])
    connection.ensure_connection()
    profiler = None
    if config.get("profile"):
        import cProfile

        profiler = cProfile.Profile()  # wall clock: waits on PostgreSQL and Dovecot show
        profiler.enable()
    statements = [0]
    shapes: Counter[str] = Counter()

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[0] += 1
        if config.get("statements"):
            shapes[" ".join(sql.split())[:110]] += 1
        return execute(sql, params, many, context)

    started = time.perf_counter()
    cpu = time.process_time()
    workers_cpu = children_cpu()
    with connection.execute_wrapper(count):
        run = scanner.scan(mailbox)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    workers_cpu = children_cpu() - workers_cpu  # the conversion workers, joined by the scan
    if profiler is not None:
        profiler.disable()
        write_profile(profiler, Path(config["profile"]))
    if config.get("statements"):
        per = max(1, run.processed)
        Path(config["statements"]).write_text(
            "".join(f"{n / per:6.2f}  {shape}\n" for shape, n in shapes.most_common(40))
        )
    return {
        "messages": run.processed,
        "counts": run.counts,
        "status": run.status,
        "error": run.error,
        "seconds": seconds,
        "cpu": cpu,
        "statements": statements[0],
        "rss_mb": peak_rss_mb(),
        "workers": settings.CONVERTER_WORKERS,
        "workers_cpu": workers_cpu,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def tree_cpu(command: str) -> float:
    """CPU seconds of every process named `command` and of their children that ended
    (PostgreSQL's and Dovecot's connections come and go; their parent keeps their time)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        if name.startswith(command):
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def write_profile(profiler: Any, path: Path) -> None:
    """The top functions by cumulative and by own time, as pstats prints them."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)
    path.write_text(out.getvalue())


def child_deliver(config: dict[str, Any]) -> dict[str, Any]:
    """Ten new messages by APPEND, as a mail server delivers them."""
    from imapclient import IMAPClient

    rng = random.Random(SEED + 7)
    with IMAPClient("127.0.0.1", port=config["port"], ssl=False) as imap:
        imap.login(config["big_user"], config["password"])
        for n in range(config["count"]):
            imap.append("INBOX", make_message(rng, 10_000_000 + n, "new"))
    return {"delivered": config["count"]}


def child_index(config: dict[str, Any]) -> dict[str, Any]:
    """One SELECT and a FETCH of sizes: Dovecot reads the new Maildir files into its index."""
    from imapclient import IMAPClient

    started = time.perf_counter()
    with IMAPClient("127.0.0.1", port=config["port"], ssl=False, timeout=600) as imap:
        imap.login(config["user"], config["password"])
        imap.select_folder("INBOX")
        sizes = imap.fetch("1:*", [b"RFC822.SIZE"])  # a range: 50,000 UIDs overflow a command
    return {"messages": len(sizes), "seconds": time.perf_counter() - started}


CHILDREN = {
    "setup": child_setup,
    "seed_cursor": child_seed_cursor,
    "bare": child_bare,
    "scan": child_scan,
    "deliver": child_deliver,
    "index": child_index,
}


# --- The run ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="300 and 3,000 messages")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="bare, scan, bare this many times on a new database each; the median ratio counts",
    )
    parser.add_argument("--database", default="crm_bench_converter")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile of the scan (wall clock), top functions"
    )
    parser.add_argument(
        "--statements", metavar="FILE", help="the scan's SQL statements per message, by shape"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.messages, args.big = min(args.messages, 300), min(args.big, 3000)
    return args


def database_url(name: str) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit(
            "Set DATABASE_URL to a PostgreSQL server, e.g. "
            "postgres://postgres@127.0.0.1:5432/crm (the bench uses its own database there)."
        )
    if not name.startswith("crm_bench"):
        raise SystemExit("--database must start with crm_bench: the bench drops and recreates it")
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    args = parse_args()
    if args.child:
        result = CHILDREN[args.child](json.loads(args.config))
        print(json.dumps(result), flush=True)
        return
    from tests.mailconverter.conftest import PASSWORD, _mail_ids

    tmp, dovecot = private_dovecot(database_url(args.database), "crm-bench-converter-")
    try:
        run(args, dovecot, PASSWORD, _mail_ids())
    finally:
        dovecot.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def private_dovecot(url: str, prefix: str) -> tuple[Path, Any]:
    """A temporary directory for the children's files and a started private Dovecot in it;
    the children's environment points at `url` and those files."""
    from tests.mailconverter.conftest import Dovecot

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)
    os.environ.update(
        DATABASE_URL=url,
        MEDIA_ROOT=str(tmp / "media"),
        CRM_VAR_DIR=str(tmp / "var"),
        DJANGO_SETTINGS_MODULE="crm.settings",
    )
    os.environ.pop("REDIS_URL", None)
    dovecot = Dovecot(root=tmp / "dovecot")
    dovecot.root.mkdir()
    dovecot.start()
    return tmp, dovecot


def run(args: argparse.Namespace, dovecot: Any, password: str, ids: tuple[int, int]) -> None:
    main_account, big_account = dovecot.add_account(), dovecot.add_account()
    say(f"Converter bench: {args.messages:,} messages, big mailbox {args.big:,}; load {load()}")
    say(machine.reference())
    started = time.perf_counter()
    rng = random.Random(SEED)
    count, total = write_maildir(
        main_account.home,
        (make_message(rng, n, "main") for n in range(args.messages)),
        ids,
    )
    write_maildir(big_account.home, (small_message(n, "big") for n in range(args.big)), ids)
    say(
        f"Mailboxes written: {count:,} messages, {total / MB:.1f} MB; {args.big:,} small "
        f"messages ({time.perf_counter() - started:.1f} s)"
    )
    base = {"port": dovecot.port, "password": password}
    for account in (main_account, big_account):
        indexed = child("index", {**base, "user": account.user})
        say(f"Dovecot indexed {indexed['messages']:,} messages in {indexed['seconds']:.1f} s")
    config = {
        **base,
        "database_url": os.environ["DATABASE_URL"],
        "main_user": main_account.user,
        "big_user": big_account.user,
    }
    rounds = []
    for n in range(1, max(1, args.rounds) + 1):
        made = child("setup", config)
        config.update(main=made["main"], big=made["big"])
        seeded = child("seed_cursor", config)
        say(f"Round {n}: database ready ({made}); big mailbox cursor at UID {seeded['last_uid']:,}")
        rounds.append(measure(args, config, made))
        say(f"Round {n}: ratio scan / bare {ratio_of(*rounds[-1]):.2f}")
    # The machine's speed drifts over minutes, and each round measures the bare rate next to
    # its own scan: the median round is the one reported.
    rounds.sort(key=lambda r: ratio_of(*r))
    before, scan, after = rounds[(len(rounds) - 1) // 2]  # of an even number, the lower
    for key in ("pss_mb", "rss_mb", "worker_rss_mb"):  # memory: the most any round took
        scan[key] = max(r[1][key] for r in rounds)
    idle = child("scan", {**config, "mailbox": made["main"]})
    big_idle = child("scan", {**config, "mailbox": made["big"]})
    child("deliver", {**config, "count": 10})
    big_new = child("scan", {**config, "mailbox": made["big"]})
    report(args, before, scan, after, idle, big_idle, big_new)
    if len(rounds) > 1:
        ratios = ", ".join(f"{ratio_of(*r):.2f}" for r in rounds)
        say(f"Ratios of the {len(rounds)} rounds, lowest first: {ratios} (the median is above)")


def measure(
    args: argparse.Namespace, config: dict[str, Any], made: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A bare fetch + parse, the scan of the main mailbox, and a bare fetch + parse again."""
    before = child("bare", config)
    servers = {name: tree_cpu(name) for name in ("postgres", "dovecot", "imap")}
    scan = child(
        "scan",
        {**config, "mailbox": made["main"], "profile": args.profile, "statements": args.statements},
    )
    scan["servers_cpu"] = {name: tree_cpu(name) - cpu for name, cpu in servers.items()}
    after = child("bare", config)
    return before, scan, after


def rate(r: dict[str, Any]) -> float:
    return float(r["messages"]) / float(r["seconds"])


def ratio_of(before: dict[str, Any], scan: dict[str, Any], after: dict[str, Any]) -> float:
    return rate(scan) / ((rate(before) + rate(after)) / 2)


def report(
    args: argparse.Namespace,
    before: dict[str, Any],
    scan: dict[str, Any],
    after: dict[str, Any],
    idle: dict[str, Any],
    big_idle: dict[str, Any],
    big_new: dict[str, Any],
) -> None:
    bare = (rate(before) + rate(after)) / 2
    converted = rate(scan)
    ratio = ratio_of(before, scan, after)
    mb = before["bytes"] / MB
    say()
    say(f"Load averages after the runs: {load()}")
    say(
        f"Bare IMAP fetch + parse:  {rate(before):7.1f} and {rate(after):7.1f} msg/s (before / "
        f"after the scan), mean {bare:.1f} msg/s, {mb / before['seconds']:.1f} MB/s, "
        f"peak RSS {before['rss_mb']:.0f} MB"
    )
    say(
        f"Converter scan:           {converted:7.1f} msg/s ({scan['messages']:,} messages in "
        f"{scan['seconds']:.1f} s), {mb / scan['seconds']:.1f} MB/s; outcomes {scan['counts']}"
        + (f"; error: {scan['error']}" if scan["error"] else "")
    )
    per = max(1, scan["messages"]) / 1000
    servers = scan["servers_cpu"]
    say(
        f"  per message: {scan['seconds'] / per:.1f} ms wall; CPU: scan {scan['cpu'] / per:.1f} "
        f"ms, {scan['workers']} conversion worker(s) {scan['workers_cpu'] / per:.1f} ms, "
        f"PostgreSQL {servers['postgres'] / per:.1f} ms, "
        f"Dovecot {(servers['dovecot'] + servers['imap']) / per:.1f} ms"
        + (f"; {scan['statements'] / per / 1000:.1f} SQL statements" if scan["workers"] < 2 else "")
    )
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    say(f"Ratio scan / bare:        {ratio:.2f}   target >= {TARGET_RATIO}: {verdict}")
    bare_cpu = (before["cpu"] / before["messages"] + after["cpu"] / after["messages"]) / 2
    say(
        f"  CPU per message in the measuring process: bare {bare_cpu * 1000:.1f} ms, scan "
        f"{scan['cpu'] / max(1, scan['messages']) * 1000:.1f} ms (PostgreSQL's and Dovecot's "
        "CPU not included)"
    )
    # Forked workers share their parent's pages (Django alone is 90 MB): the sum of the peak
    # RSS counts those pages once per process, the summed PSS once in all.
    workers = scan["workers"] if scan["workers"] > 1 else 0
    rss = scan["rss_mb"] + workers * scan["worker_rss_mb"]
    verdict = "MET" if scan["pss_mb"] < TARGET_RSS_MB else "NOT MET"
    say(
        f"Peak memory of the scan:  {scan['pss_mb']:.0f} MB summed PSS of the scan and its "
        f"workers   target < {TARGET_RSS_MB} MB: {verdict}"
    )
    say(
        f"  peak RSS: scan {scan['rss_mb']:.0f} MB, {workers} worker(s) at most "
        f"{scan['worker_rss_mb']:.0f} MB each; their sum, {rss:.0f} MB, counts shared pages "
        "once per process"
    )
    for label, r in (
        (f"Scan, no new mail ({args.messages:,} messages)", idle),
        (f"Scan, no new mail ({args.big:,} messages)", big_idle),
    ):
        verdict = "MET" if r["seconds"] < TARGET_IDLE_SECONDS and r["messages"] == 0 else "NOT MET"
        say(
            f"{label}: {r['seconds'] * 1000:.0f} ms, {r['messages']} processed   "
            f"target < {TARGET_IDLE_SECONDS:g} s and 0 processed: {verdict}"
        )
    say(
        f"Scan after 10 new messages ({args.big:,}-message mailbox): "
        f"{big_new['seconds'] * 1000:.0f} ms, {big_new['messages']} processed {big_new['counts']}"
    )


if __name__ == "__main__":
    main()
