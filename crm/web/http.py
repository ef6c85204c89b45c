"""Request types for the views' annotations (typing only: Django builds plain HttpRequests)."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

from crm.models import User


class AuthedRequest(HttpRequest):
    """A request to a `login_required` view, past django-htmx's middleware."""

    user: User
    htmx: HtmxDetails
