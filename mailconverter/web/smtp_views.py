"""A mailbox's outgoing server for "Answer by mail (info)" and mailed comments.

One page under the mailbox's settings (administrators only, like the rest). Blank server and
user name mean the mailbox's own (see `mailconverter.replies`); the password is write-only.
"""

from __future__ import annotations

import contextlib

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from crm.exceptions import Invalid
from crm.models import SmtpSecurity
from crm.web.http import AuthedRequest
from mailconverter import replies
from mailconverter.models import Mailbox
from mailconverter.web import selectors
from mailconverter.web.views import TABS


class MailboxSmtpForm(forms.Form):
    host = forms.CharField(
        label="SMTP server",
        required=False,
        max_length=255,
        help_text="Blank: the mailbox's server.",
    )
    port = forms.IntegerField(
        min_value=1, max_value=65535, help_text="587 for STARTTLS, 465 for SSL/TLS."
    )
    security = forms.ChoiceField(choices=SmtpSecurity.choices)
    username = forms.CharField(
        label="User name",
        required=False,
        max_length=320,
        help_text="Blank: the mailbox's user name and password.",
    )
    # Write-only: never rendered back; left blank, the stored one stays.
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_password = forms.BooleanField(label="Remove the saved password", required=False)


@login_required
def mailbox_smtp(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    testing = request.method == "POST" and "test_to" in request.POST
    row = replies.smtp_row(mailbox)
    initial = {"host": row.host, "port": row.port, "security": row.security}
    posted = request.POST if request.method == "POST" and not testing else None
    form = MailboxSmtpForm(posted, initial=initial | {"username": row.username})
    answer = ""
    test_to = request.POST.get("test_to", "").strip() if testing else request.user.email
    if testing:
        answer = _test(request, mailbox, test_to)
    elif posted is not None and form.is_valid() and _save(request, mailbox, form):
        messages.success(request, f"Outgoing settings of {mailbox.name} saved.")
        return redirect("mailconverter:smtp", pk=mailbox.pk)
    tabs = [(key, label, reverse(name, kwargs={"pk": mailbox.pk})) for key, label, name in TABS]
    sender = ""
    with contextlib.suppress(Invalid):
        sender = replies.mailbox_sender(mailbox).email
    context = {
        "mailbox": mailbox,
        "tab": "settings",
        "tabs": tabs,
        "form": form,
        "has_password": bool(row.secret),
        "sender": sender,
        "effective": replies.smtp_for(mailbox),
        "answer": answer,
        "test_to": test_to,
    }
    return render(
        request, "mailconverter/mailbox_smtp.html", context, status=400 if form.errors else 200
    )


def _save(request: AuthedRequest, mailbox: Mailbox, form: MailboxSmtpForm) -> bool:
    data = form.cleaned_data
    values = replies.SmtpInput(
        host=data["host"], port=data["port"], security=data["security"], username=data["username"]
    )
    try:
        replies.save_smtp(
            actor=request.user,
            mailbox=mailbox,
            values=values,
            password=data["password"],
            clear_password=data["clear_password"],
        )
    except Invalid as exc:
        for name, message in exc.fields.items():
            form.add_error(name if name in form.fields else None, message)
        if not exc.fields:
            form.add_error(None, exc.detail)
        return False
    return True


def _test(request: AuthedRequest, mailbox: Mailbox, to: str) -> str:
    try:
        return replies.test_smtp(actor=request.user, mailbox=mailbox, to=to)
    except Invalid as exc:
        return f"Not sent. {exc.detail}"
