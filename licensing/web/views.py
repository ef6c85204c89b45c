"""The "Outlook Mail Connector" settings page: the license, a key to paste, the enabled users.

Administrators only; to anyone else the page does not exist (404). Each POST calls one service
and redirects; a refusal re-renders the page with the reason next to what was entered.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_GET, require_POST

from crm.exceptions import ServiceError
from licensing import services
from licensing.web.forms import ActivationForm, SeatsForm


@login_required
@require_GET
def mail_connector(request: HttpRequest) -> HttpResponse:
    services.require_administrator(request.user)
    return _page(request)


@login_required
@require_POST
def activate(request: HttpRequest) -> HttpResponse:
    services.require_administrator(request.user)
    form = ActivationForm(request.POST)
    if form.is_valid():
        try:
            license_ = services.activate(actor=request.user, key=form.cleaned_data["key"])
        except ServiceError as exc:
            form.add_error("key", exc.detail)
        else:
            allowed = f"{license_.users} user{pluralize(license_.users)}"
            messages.success(
                request,
                f"License activated for {license_.installation}: "
                f"up to {allowed} may use the connector.",
            )
            if license_.users_disabled:
                messages.warning(
                    request,
                    f"The new key allows {allowed}, so these were disabled: "
                    f"{', '.join(license_.users_disabled)}.",
                )
            return redirect("licensing:mail_connector")
    return _page(request, activation_form=form)


@login_required
@require_POST
def users(request: HttpRequest) -> HttpResponse:
    services.require_administrator(request.user)
    form = SeatsForm(request.POST)
    if not form.is_valid():
        return _page(request, seats_form=form, seats_error="That list of users is out of date.")
    try:
        change = services.set_enabled_users(actor=request.user, users=form.cleaned_data["users"])
    except ServiceError as exc:
        return _page(request, seats_form=form, seats_error=exc.detail)
    parts = []
    if change.enabled:
        parts.append(f"enabled {', '.join(change.enabled)}")
    if change.disabled:
        parts.append(f"disabled {', '.join(change.disabled)}")
    messages.success(request, f"Saved: {'; '.join(parts)}." if parts else "Nothing changed.")
    return redirect("licensing:mail_connector")


def _page(
    request: HttpRequest,
    *,
    activation_form: ActivationForm | None = None,
    seats_form: SeatsForm | None = None,
    seats_error: str = "",
) -> HttpResponse:
    rows = services.seat_rows()
    # After a refusal the boxes show what the administrator ticked, not what is saved.
    ticked = (
        seats_form.ticked_ids()
        if seats_form is not None
        else {row.user.pk for row in rows if row.enabled}
    )
    return render(
        request,
        "licensing/mail_connector.html",
        {
            "summary": services.summary(),
            "history": services.history(),
            "rows": rows,
            "ticked": ticked,
            "activation_form": activation_form or ActivationForm(),
            "seats_error": seats_error,
            "crm_address": services.crm_address(),
        },
    )
