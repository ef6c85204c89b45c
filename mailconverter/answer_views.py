""" "Answer by mail" and "Answer by mail (info)" on converter tickets: the answer form.

GET shows the form (who it goes to, from which address, the quoted message, the ticket's
documents); POST calls `replies.answer` and returns to the ticket's Messages tab. The service
checks everything again; a refusal re-renders the form with what was typed.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import escape, linebreaks

from crm import access
from crm.exceptions import Invalid
from crm.models import Module
from crm.web.http import AuthedRequest
from mailconverter import replies


@login_required
def answer(request: AuthedRequest, pk: int) -> HttpResponse:
    return _answer(request, pk, info=False)


@login_required
def answer_info(request: AuthedRequest, pk: int) -> HttpResponse:
    return _answer(request, pk, info=True)


def _answer(request: AuthedRequest, pk: int, *, info: bool) -> HttpResponse:
    tickets = Module.objects.get(name=replies.TICKETS)
    ticket = access.get_record(request.user, tickets, pk, "edit")
    body = request.POST.get("body", "")
    chosen = [int(v) for v in request.POST.getlist("documents") if v.isdigit()]
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            outgoing = replies.answer(
                actor=request.user,
                ticket=ticket,
                body_html=linebreaks(escape(body)),
                info=info,
                documents=chosen,
            )
        except Invalid as exc:
            errors = exc.fields or {"": exc.detail}
        else:
            messages.success(request, f"Answer sent to {', '.join(outgoing.recipients)}.")
            url = reverse("crm:record_detail", kwargs={"module": tickets.name, "pk": ticket.pk})
            return redirect(f"{url}?tab=messages")
    try:
        draft = replies.draft(actor=request.user, ticket=ticket, info=info)
    except Invalid as exc:
        messages.error(request, exc.detail)
        return redirect("crm:record_detail", module=tickets.name, pk=ticket.pk)
    context = {
        "module": tickets,
        "record": ticket,
        "draft": draft,
        "body": body,
        "chosen": set(chosen),
        "errors": errors,
        "form_errors": [v for k, v in errors.items() if k not in ("body", "documents")],
    }
    status = 400 if errors else 200
    return render(request, "mailconverter/answer.html", context, status=status)
