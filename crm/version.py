"""The CRM's version, calendar style: YY.MM.PATCH."""

from __future__ import annotations

CRM_VERSION = "26.11.0"
