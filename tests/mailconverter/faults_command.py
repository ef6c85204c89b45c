"""`manage.py mailconverter_scan`, killed with SIGKILL at a chosen point: tests only.

    CONVERTER_FAULT_KILL_AT=before_commit:3 python -m tests.mailconverter.faults_command \\
        --mailbox support

runs the real scan command in this process, after wrapping two scanner functions so that the
process kills itself, with nothing to catch it, at

- `before_commit:N`: the Nth message's conversion is done inside its transaction, not yet
  committed (ticket, links and ledger row written, then the process dies);
- `after_commit:N`: the Nth message's transaction has committed, before any \\Seen flag or
  move for it (the ledger row stays `after_scan_pending`).

N counts messages whose work got that far in this process; with conversion workers
(CONVERTER_WORKERS) each worker inherits the wrapping and counts its own, and the first to
reach N kills itself, not the scan. Without the variable the command runs unchanged. The
product carries no hook: the wrapping happens here, before the command starts, the way a
debugger would.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

POINTS = ("before_commit", "after_commit")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _on_nth(real: Callable[..., Any], n: int) -> Callable[..., Any]:
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == n:
            _die()
        return result

    return wrapper


def install(spec: str) -> None:
    """Wrap the scanner for `spec` ("before_commit:N" or "after_commit:N")."""
    from mailconverter import scanner

    point, _, count = spec.partition(":")
    n = int(count)
    if point == "before_commit":
        # `_convert` returns inside process()'s atomic block: its work is done, uncommitted.
        scanner._convert = _on_nth(scanner._convert, n)  # type: ignore[assignment]
    elif point == "after_commit":
        # `process` returns after the commit; the scan loop flags the batch later.
        scanner.process = _on_nth(scanner.process, n)  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown fault point {point!r}; expected one of {POINTS}")


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    import django
    from django.core.management import call_command

    django.setup()
    spec = os.environ.get("CONVERTER_FAULT_KILL_AT", "")
    if spec:
        install(spec)
    call_command("mailconverter_scan", *argv)


if __name__ == "__main__":
    main(sys.argv[1:])
