"""Soak of the scanner's exactly-once guarantee: the fault scenario over many seeds.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench \\
        .venv/bin/python bench/converter_faults.py [--seeds 20] [--first 1]

Runs tests/mailconverter/test_exactly_once.py (a private Dovecot, the fault proxy, scanner
subprocesses killed at seeded points, Dovecot restarted, UIDVALIDITY changed, two workers at
once, then a clean scan) once per seed and per way of converting: in the scan's own process,
and in two conversion workers (whose kills then strike a worker, not the scan). pytest-django's
test database is made from DATABASE_URL (`test_<name>`, created and dropped by the run). Each
run appends its count against the mailbox's manifest to a report; this script prints one row
per seed and way, and the totals:

- messages: emails delivered (questions, replies, auto-replies, poison);
- lost: a question without its ticket, a reply not on its ticket, poison not quarantined;
- duplicates: a second ticket, Message, link or comment for one email;
- unsettled: non-poison mail not \\Seen after the clean scan;
- seen_uncommitted: \\Seen on mail without a committed ledger row;
- connections: most IMAP connections to the mailbox open at once (the pass figure is 1).

A seed that fails before it is counted (an assertion on the way) is listed with pytest's
one-line reason. Exit status 0 only when every seed ran and every figure is at its pass value.
About 20 to 50 seconds per run on two cores, most of it waiting for Dovecot restarts,
stalls and scanner processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/mailconverter/test_exactly_once.py"
COLUMNS = ("messages", "lost", "duplicates", "unsettled", "seen_uncommitted")
MODES = ("one-process", "workers")  # the test's ids: converting in the scan, or in workers
PASS = {"lost": 0, "duplicates": 0, "unsettled": 0, "seen_uncommitted": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        print("Set DATABASE_URL to a PostgreSQL database (the test database is made from it).")
        return 2
    seeds = list(range(args.first, args.first + args.seeds))
    with tempfile.TemporaryDirectory(prefix="converter-faults-") as tmp:
        report = Path(tmp) / "report.jsonl"
        started = time.monotonic()
        failures = _run(seeds, report)
        elapsed = time.monotonic() - started
        lines = report.read_text().splitlines() if report.exists() else []
        rows = {f"{r['seed']}-{r['mode']}": r for r in map(json.loads, lines)}
    runs = [f"{seed}-{mode}" for seed in seeds for mode in MODES]
    return _print(runs, rows, failures, elapsed)


def _run(seeds: list[int], report: Path) -> dict[str, str]:
    """pytest over the seeds; returns "seed-mode" → pytest's one-line reason per failure."""
    env = dict(
        os.environ,
        CONVERTER_FAULT_SEEDS=",".join(map(str, seeds)),
        CONVERTER_FAULT_REPORT=str(report),
    )
    env.setdefault("CRM_VAR_DIR", tempfile.mkdtemp(prefix="converter-faults-var-"))
    done = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pytest",
            TEST,
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfE",
            "--create-db",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    failures: dict[str, str] = {}
    for line in done.stdout.splitlines():
        # FAILED tests/...::test_...[7-workers] - AssertionError: ...
        if line.startswith(("FAILED", "ERROR")) and "[" in line:
            run = line.split("[", 1)[1].split("]", 1)[0]
            failures[run] = line.split(" - ", 1)[-1][:160]
    if done.returncode not in (0, 1):  # not "some tests failed": the run itself broke
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    return failures


def _print(
    runs: list[str], rows: dict[str, dict[str, object]], failures: dict[str, str], elapsed: float
) -> int:
    print(f"{'seed':>17} " + " ".join(f"{c:>16}" for c in (*COLUMNS, "connections")) + "  faults")
    totals = dict.fromkeys(COLUMNS, 0)
    faults: dict[str, int] = {}
    for run in runs:
        row = rows.get(run)
        if row is None:
            print(f"{run:>17} not counted: {failures.get(run, 'no report (run broken?)')}")
            continue
        for c in COLUMNS:
            totals[c] += int(row[c])  # type: ignore[call-overload]
        struck = row["faults"]
        assert isinstance(struck, dict)
        for kind, n in struck.items():
            faults[kind] = faults.get(kind, 0) + n
        line = " ".join(f"{row[c]:>16}" for c in (*COLUMNS, "most_connections_at_once"))
        print(f"{run:>17} {line}  {sum(struck.values())}")
        if run in failures:
            print(f"      failed after the count: {failures[run]}")
    counted = len(rows)
    print()
    print(f"runs (seed and mode): {len(runs)}, counted: {counted}, failed: {len(failures)}")
    print("messages: {messages}, lost: {lost}, duplicates: {duplicates}, ".format(**totals), end="")
    print("unsettled: {unsettled}, \\Seen uncommitted: {seen_uncommitted}".format(**totals))
    print("faults struck: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    most = max((int(r["most_connections_at_once"]) for r in rows.values()), default=0)  # type: ignore[call-overload]
    print(f"most IMAP connections to one mailbox at once: {most}")
    print(f"elapsed: {elapsed:.0f} s ({elapsed / max(1, len(runs)):.1f} s per run)")
    ok = (
        counted == len(runs)
        and not failures
        and all(totals[k] == v for k, v in PASS.items())
        and most <= 1
    )
    print("verdict: " + ("exactly once under faults: MET" if ok else "NOT MET"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
