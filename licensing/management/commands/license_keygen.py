from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from licensing import keys


class Command(BaseCommand):
    help = (
        "Vendor side: write a new Ed25519 key pair for signing license keys "
        "(the private key file is readable by its owner only; nothing is overwritten)."
    )
    # The vendor runs this away from any CRM: no database, no system checks needed.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--private-key",
            type=Path,
            default=Path("license-private-key.pem"),
            help="where to write the private key (PEM); default ./license-private-key.pem",
        )
        parser.add_argument(
            "--public-key",
            type=Path,
            default=None,
            help="also write the public key (base64, the value of LICENSE_PUBLIC_KEY) here",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        private_path: Path = options["private_key"]
        public_path: Path | None = options["public_key"]
        for path in (private_path, public_path):
            if path is not None and path.exists():
                raise CommandError(f"{path} already exists; refusing to overwrite a key.")
        private_key = keys.generate_private_key()
        public_b64 = keys.public_key_b64(private_key.public_key())
        _write_new(private_path, keys.private_key_pem(private_key), mode=0o600)
        if public_path is not None:
            _write_new(public_path, f"{public_b64}\n".encode("ascii"), mode=0o644)
        self.stdout.write(f"Private key written to {private_path} (keep it secret, keep a backup).")
        if public_path is not None:
            self.stdout.write(f"Public key written to {public_path}.")
        self.stdout.write("Set this on every CRM that should accept keys signed with it:")
        self.stdout.write(f"LICENSE_PUBLIC_KEY={public_b64}")


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    # O_EXCL: never overwrite, even if the file appeared since the check; the mode applies from
    # creation, so the private key is never readable by others, not even for a moment.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CommandError(f"{path} already exists; refusing to overwrite a key.") from None
    except OSError as exc:
        raise CommandError(f"Cannot write {path}: {exc.strerror}.") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have narrowed or the creation mode
