from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from crm import access
from crm.version import CRM_VERSION
from crm.web import extensions


def crm(request: HttpRequest) -> dict[str, Any]:
    """The version for the footer and the modules for the menu, on every page."""
    user = getattr(request, "user", None)
    modules = access.visible_modules(user) if user is not None else []
    # A callable: the template calls it only where a page shows notices (they are read once).
    return {
        "crm_version": CRM_VERSION,
        "menu_modules": modules,
        "page_notices": lambda: extensions.notices(request),
    }
