"""Mailbox secrets at rest: the CRM's Fernet helper (`crm.secrets`), under its first name."""

from __future__ import annotations

from crm.secrets import *  # noqa: F403
from crm.secrets import __all__ as __all__
