"""Does a crash of the database server during a scan lose or double anything?

A scan's commits do not wait for the disk (mailconverter.scanner.commit_without_waiting); it
makes them durable before it flags, moves or passes them with the cursor. This stops the
local PostgreSQL cluster with `pg_ctlcluster … stop -m immediate` (no checkpoint, recovery
from the log at the next start: as after a crash) while a scan with its workers converts,
starts it again, and checks:

- right after the restart, every message flagged \\Seen and every UID behind the cursor has
  its ledger row (what the scan acted on survived);
- after a second scan, every message has exactly one settled ledger row, every email that
  opened a ticket opened exactly one, and every message is flagged.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/converter_crash.py [--messages 1500] [--crashes 3]

It restarts the cluster that DATABASE_URL names, which must be local (pg_ctlcluster): run it
on a machine where nothing else uses that server. Built on bench/converter.py's corpus,
database and children.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import converter


def _cluster_version() -> str:
    if not os.path.isdir("/etc/postgresql"):
        return ""
    return max(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])


PG_VERSION = _cluster_version()


def restart_postgres() -> None:
    cluster = ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main"]
    subprocess.run([*cluster, "stop", "-m", "immediate"], check=True)  # noqa: S603
    subprocess.run([*cluster, "start"], check=True)  # noqa: S603
    for _ in range(60):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0:  # noqa: S607
            return
        time.sleep(0.5)
    raise SystemExit("PostgreSQL did not come back")


def psql(url: str, sql: str) -> list[list[str]]:
    out = subprocess.run(  # noqa: S603
        ["psql", url, "-AtF", "\t", "-c", sql],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def server_flags(port: int, user: str, password: str) -> dict[int, bool]:
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60) as imap:
        imap.login(user, password)
        imap.select_folder("INBOX", readonly=True)
        found = imap.fetch("1:*", ["FLAGS"])
    return {uid: b"\\Seen" in data[b"FLAGS"] for uid, data in found.items()}


def mark_unread(config: dict[str, Any]) -> None:
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=config["port"], ssl=False, timeout=60) as imap:
        imap.login(config["main_user"], config["password"])
        imap.select_folder("INBOX")
        imap.remove_flags(imap.search("ALL"), [b"\\Seen"])


SETTLED = "SELECT count(*) FROM mailconverter_ledgerentry WHERE error = ''"


def crash_during_scan(config: dict[str, Any], url: str, at: float) -> int:
    """Start a scan, wait until `at` of the messages are done, crash the database server;
    the number of settled ledger rows seen just before the crash."""
    command = [
        sys.executable,
        converter.__file__,
        "--child",
        "scan",
        "--config",
        json.dumps({**config, "mailbox": config["main"]}),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
    target = int(config["messages"] * at)
    seen = 0
    while proc.poll() is None:
        seen = int(psql(url, SETTLED)[0][0])
        if seen >= target:
            break
        time.sleep(0.2)
    restart_postgres()
    proc.wait(timeout=120)
    return seen


def check_after_crash(config: dict[str, Any], url: str) -> tuple[int, int, int]:
    """(flagged, flagged without a ledger row, UIDs behind the cursor without one)."""
    flags = server_flags(config["port"], config["main_user"], config["password"])
    settled = {
        int(uid)
        for (uid,) in psql(url, "SELECT uid FROM mailconverter_ledgerentry WHERE error = ''")
    }
    folder = f"SELECT last_uid FROM mailconverter_folder WHERE mailbox_id = {int(config['main'])}"  # noqa: S608
    cursor = int(psql(url, folder)[0][0])
    flagged = {uid for uid, seen in flags.items() if seen}
    behind = {uid for uid in flags if uid <= cursor}
    return len(flagged), len(flagged - settled), len(behind - settled)


def check_final(config: dict[str, Any], url: str) -> dict[str, int]:
    flags = server_flags(config["port"], config["main_user"], config["password"])
    ledger = (
        "SELECT uid, count(*), bool_and(error = '') FROM mailconverter_ledgerentry "  # noqa: S608
        f"WHERE mailbox_id = {int(config['main'])} GROUP BY uid"
    )
    per_uid = psql(url, ledger)
    tickets = psql(
        url,
        "SELECT count(*) FROM (SELECT message_id FROM mailconverter_ticketorigin "
        "GROUP BY message_id HAVING count(*) > 1) doubled",
    )
    links = psql(
        url,
        "SELECT count(*) FROM (SELECT message_id, record_id FROM crm_messagelink "
        "GROUP BY message_id, record_id HAVING count(*) > 1) doubled",
    )
    rows = {int(uid): (int(n), ok == "t") for uid, n, ok in per_uid}
    return {
        "messages": len(flags),
        "unconverted": sum(1 for uid in flags if not rows.get(uid, (0, False))[1]),
        "ledger rows doubled": sum(1 for n, _ in rows.values() if n > 1),
        "emails with two tickets": int(tickets[0][0]),
        "links doubled": int(links[0][0]),
        "not flagged": sum(1 for seen in flags.values() if not seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--crashes", type=int, default=3)
    args = parser.parse_args()
    if not PG_VERSION:
        raise SystemExit("no local PostgreSQL cluster (pg_ctlcluster) to crash")
    from tests.mailconverter.conftest import PASSWORD, _mail_ids

    url = converter.database_url("crm_bench_converter_crash")
    tmp, dovecot = converter.private_dovecot(url, "crm-bench-crash-")
    failures = 0
    try:
        main_account, big_account = dovecot.add_account(), dovecot.add_account()
        rng = random.Random(converter.SEED)
        messages = (converter.make_message(rng, n, "main") for n in range(args.messages))
        converter.write_maildir(main_account.home, messages, _mail_ids())
        base = {"port": dovecot.port, "password": PASSWORD}
        converter.child("index", {**base, "user": main_account.user})
        config = {
            **base,
            "database_url": url,
            "main_user": main_account.user,
            "big_user": big_account.user,
            "messages": args.messages,
        }
        for n in range(1, args.crashes + 1):
            made = converter.child("setup", config)
            config.update(main=made["main"], big=made["big"])
            at = 0.2 + 0.6 * (n - 1) / max(1, args.crashes - 1)
            before = crash_during_scan(config, url, at)
            after = int(psql(url, SETTLED)[0][0])
            flagged, lost_flagged, lost_behind = check_after_crash(config, url)
            psql(url, "UPDATE mailconverter_mailboxlease SET expires_at = now()")  # it crashed
            converter.child("scan", {**config, "mailbox": made["main"]})
            final = check_final(config, url)
            bad = lost_flagged + lost_behind + sum(v for k, v in final.items() if k != "messages")
            failures += bool(bad)
            print(
                f"crash {n} at {at:.0%}: {before} messages settled at the last look before "
                f"the crash, {after} after the restart; "
                f"{flagged} flagged before the crash, {lost_flagged} of "
                f"them without their ledger row after it, {lost_behind} behind the cursor "
                f"without one; after a second scan {final}",
                flush=True,
            )
            mark_unread(config)  # the next crash starts from the same mailbox
    finally:
        dovecot.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    verdict = "MET" if failures == 0 else "NOT MET"
    print(f"crashes: {args.crashes}, with a loss or a double: {failures}. Nothing lost: {verdict}")


if __name__ == "__main__":
    main()
