"""The "Outgoing mail" settings page: the SMTP server all CRM mail leaves through, and a button
that sends a test mail and shows the server's answer.

Administrators only; to anyone else the page does not exist (404). The password is write-only:
the form never renders it, a blank field keeps the saved one.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from crm.exceptions import Invalid, ServiceError
from crm.models import OutgoingMailSettings, SmtpSecurity
from crm.services import mail
from crm.web.http import AuthedRequest

_SETTINGS_FIELDS = [
    "host",
    "port",
    "security",
    "verify_certificate",
    "username",
    "from_central",
    "central_address",
    "central_name",
    "open_tracking",
    "hourly_cap",
    "timeout_seconds",
]


# The page's groups of fields, in order.
_SECTIONS = [
    (
        "Server",
        [
            "host",
            "port",
            "security",
            "verify_certificate",
            "username",
            "password",
            "clear_password",
            "timeout_seconds",
        ],
    ),
    ("Sender", ["from_central", "central_address", "central_name"]),
    ("Automatic mail and tracking", ["hourly_cap", "open_tracking"]),
]


class OutgoingSettingsForm(forms.Form):
    host = forms.CharField(label="SMTP server", max_length=255, required=False)
    port = forms.IntegerField(label="Port", initial=587)
    security = forms.ChoiceField(label="Security", choices=SmtpSecurity.choices)
    verify_certificate = forms.BooleanField(label="Verify the certificate", required=False)
    username = forms.CharField(label="User name", max_length=320, required=False)
    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave blank to keep the saved password.",
    )
    clear_password = forms.BooleanField(label="Remove the saved password", required=False)
    from_central = forms.BooleanField(
        label="Send all CRM mail from one central address",
        required=False,
        help_text="Replies then go to the user who wrote (Reply-To). Otherwise mail leaves "
        "from each user's own address.",
    )
    central_address = forms.CharField(label="Central address", max_length=254, required=False)
    central_name = forms.CharField(label="Central sender name", max_length=255, required=False)
    open_tracking = forms.BooleanField(label="Track openings", required=False)
    hourly_cap = forms.IntegerField(
        label="Automatic mails per hour and address",
        min_value=1,
        help_text="Comments mailed and automatic answers beyond it wait for the next hour.",
    )
    timeout_seconds = forms.IntegerField(label="Seconds to wait for the server", min_value=1)

    def values(self) -> mail.SettingsInput:
        return mail.SettingsInput(**{name: self.cleaned_data[name] for name in _SETTINGS_FIELDS})


class TestMailForm(forms.Form):
    to = forms.CharField(label="Send a test mail to", max_length=254)


@login_required
@require_http_methods(["GET", "POST"])
def outgoing_settings(request: AuthedRequest) -> HttpResponse:
    mail.require_administrator(request.user)
    if request.method != "POST":
        return _page(request, form=OutgoingSettingsForm(initial=_initial(mail.current_settings())))
    form = OutgoingSettingsForm(request.POST)
    if form.is_valid():
        try:
            mail.save_settings(
                actor=request.user,
                values=form.values(),
                password=form.cleaned_data["password"],
                clear_password=form.cleaned_data["clear_password"],
            )
        except Invalid as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, "Outgoing mail settings saved.")
            return redirect("crm:outgoing_settings")
    return _page(request, form=form, status=400)


@login_required
@require_POST
def outgoing_test(request: AuthedRequest) -> HttpResponse:
    mail.require_administrator(request.user)
    test_form = TestMailForm(request.POST)
    answer = ""
    if test_form.is_valid():
        try:
            answer = mail.send_test(actor=request.user, to=test_form.cleaned_data["to"])
        except ServiceError as exc:
            _add_errors(test_form, exc)
    form = OutgoingSettingsForm(initial=_initial(mail.current_settings()))
    status = 400 if test_form.errors else 200
    return _page(request, form=form, test_form=test_form, answer=answer, status=status)


def _initial(row: OutgoingMailSettings) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _SETTINGS_FIELDS}


def _add_errors(form: forms.Form, exc: ServiceError) -> None:
    fields = getattr(exc, "fields", {}) or {}
    for name, text in fields.items():
        form.add_error(name if name in form.fields else None, text)
    if not fields:
        form.add_error(None, exc.detail)


def _page(
    request: AuthedRequest,
    *,
    form: OutgoingSettingsForm,
    test_form: TestMailForm | None = None,
    answer: str = "",
    status: int = 200,
) -> HttpResponse:
    row = mail.current_settings()
    return render(
        request,
        "crm/settings_outgoing.html",
        {
            "form": form,
            "sections": [(title, [form[name] for name in names]) for title, names in _SECTIONS],
            "test_form": test_form or TestMailForm(initial={"to": request.user.email}),
            "answer": answer,
            "saved": row,
            "has_password": bool(row.secret),
        },
        status=status,
    )
