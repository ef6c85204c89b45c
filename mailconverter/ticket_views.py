""" "Mark as spam" and "Undo" on converter tickets: parse the request, call one service, redirect.

The pages themselves are the CRM's record pages (mailconverter.extensions adds the buttons).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from crm import access
from crm.exceptions import Invalid, NotFound
from crm.models import Module, Record
from crm.web.http import AuthedRequest
from mailconverter import services
from mailconverter.extensions import NOTICE_KEY, TICKETS
from mailconverter.models import SpamMark


@login_required
@require_POST
def mark_spam(request: AuthedRequest, pk: int) -> HttpResponse:
    ticket = access.get_record(request.user, _tickets(), pk)
    return _mark(request, [ticket], back=_ticket_url(pk))


@login_required
@require_POST
def mark_spam_many(request: AuthedRequest) -> HttpResponse:
    ids = {int(v) for v in request.POST.getlist("records") if v.isdigit()}
    chosen = list(access.records(request.user, _tickets()).filter(pk__in=ids))
    if len(chosen) != len(ids):
        raise NotFound("No such record.")
    return _mark(request, chosen, back=_next(request))


@login_required
@require_POST
def undo_spam(request: AuthedRequest, pk: int) -> HttpResponse:
    mark = SpamMark.objects.filter(pk=pk).first()
    if mark is None:
        raise NotFound("Nothing to undo.")
    try:
        result = services.undo_spam(actor=request.user, mark=mark)
    except Invalid as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, result.summary)
    return redirect(_next(request))


def _mark(request: AuthedRequest, chosen: list[Record], back: str) -> HttpResponse:
    try:
        mark = services.mark_spam(actor=request.user, tickets=chosen)
    except Invalid as exc:
        messages.error(request, exc.fields.get("records") or exc.detail)
        return redirect(back)
    request.session[NOTICE_KEY] = mark.pk
    return redirect(_next(request))


def _tickets() -> Module:
    return Module.objects.get(name=TICKETS)


def _ticket_url(pk: int) -> str:
    return reverse("crm:record_detail", kwargs={"module": TICKETS, "pk": pk})


def _next(request: AuthedRequest) -> str:
    """Back to the list the user came from (a local address only), else the Tickets list."""
    wanted = request.POST.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return reverse("crm:record_list", kwargs={"module": TICKETS})
