"""The OAuth2 consent behind "Connect with Microsoft / Google" on an XOAUTH2 mailbox's page.

`oauth2_connect` (a POST from the mailbox's settings page) begins the consent, keeps it in the
administrator's session under its `state` and sends the browser to the provider; the provider
sends it back to `oauth2_callback`, which takes that consent out of the session (once) and has
the service trade the code for tokens. A `state` this session did not start (forged, replayed,
expired, another browser's) changes nothing. See mailconverter.oauth2, "Consent".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from crm.exceptions import Invalid
from crm.web.http import AuthedRequest
from crm.web.middleware import PAGE_POLICY
from mailconverter import oauth2, services
from mailconverter.web import selectors

SESSION_KEY = "mailconverter.oauth2_consents"
MAX_PENDING = 5  # consents under way per session (several tabs); the oldest goes first

BAD_STATE = (
    "This answer from the sign-in page does not belong to a connection started in this browser "
    "session, or it came too late: nothing was changed. Press “Connect” on the mailbox again."
)


def page_policy() -> str:
    """The pages' Content-Security-Policy, letting the settings page's form go to the providers.

    `form-action 'self'` covers the redirects that follow a form's POST, so the browser would
    refuse to follow "Connect with …" to the provider's sign-in page (Chromium does).
    """
    origins = sorted({_origin(p.authorize_url) for p in oauth2.providers()} - {""})
    own = "form-action 'self'"
    return PAGE_POLICY.replace(own, " ".join([own, *origins]), 1)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or "'" in parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


def redirect_uri() -> str:
    """The callback's address, to register at the provider (settings.CRM_BASE_URL based)."""
    return settings.CRM_BASE_URL.rstrip("/") + reverse("mailconverter:oauth2_callback")


@login_required
@require_POST
def oauth2_connect(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    try:
        consent, url = services.start_oauth2_consent(
            actor=request.user,
            mailbox=mailbox,
            provider=request.POST.get("provider", ""),
            client_id=request.POST.get("client_id", ""),
            client_secret=request.POST.get("client_secret", ""),
            redirect_uri=redirect_uri(),
        )
    except Invalid as exc:
        messages.error(request, " ".join(exc.fields.values()) or exc.detail)
        return redirect("mailconverter:mailbox", pk=mailbox.pk)
    _remember(request, consent)
    return HttpResponseRedirect(url)


@login_required
@require_GET
def oauth2_callback(request: AuthedRequest) -> HttpResponse:
    consent = _take(request, request.GET.get("state", ""))
    if consent is None:
        messages.error(request, BAD_STATE)
        return redirect("mailconverter:mailboxes")
    mailbox = selectors.mailbox(request.user, consent.mailbox_id)
    error = request.GET.get("error", "")
    if error:
        messages.error(
            request, oauth2.denied(consent, error, request.GET.get("error_description", ""))
        )
        return redirect("mailconverter:mailbox", pk=mailbox.pk)
    try:
        services.finish_oauth2_consent(
            actor=request.user, mailbox=mailbox, consent=consent, code=request.GET.get("code", "")
        )
    except Invalid as exc:
        messages.error(request, exc.detail)
    else:
        label = oauth2.provider(consent.provider).label
        messages.success(
            request,
            f"{mailbox.name} is connected with {label}: scans sign in with its token (XOAUTH2).",
        )
    return redirect("mailconverter:mailbox", pk=mailbox.pk)


# --- the consents under way, in the session ----------------------------------------------------


def _remember(request: AuthedRequest, consent: oauth2.Consent) -> None:
    pending = _pending(request)
    pending[consent.state] = consent.as_dict()
    kept = sorted(pending.items(), key=lambda item: item[1].get("started_at", 0))[-MAX_PENDING:]
    request.session[SESSION_KEY] = dict(kept)


def _take(request: AuthedRequest, state: str) -> oauth2.Consent | None:
    """The consent this session started with `state`, for this administrator; used up here."""
    pending = _pending(request)
    data = pending.pop(state, None) if state else None
    request.session[SESSION_KEY] = pending
    consent = oauth2.Consent.from_dict(data) if isinstance(data, dict) else None
    if consent is None or consent.expired or consent.user_id != request.user.pk:
        return None
    return consent


def _pending(request: AuthedRequest) -> dict[str, dict[str, Any]]:
    found = request.session.get(SESSION_KEY)
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, dict)}
