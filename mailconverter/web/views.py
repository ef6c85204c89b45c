"""The "Mail Converter" settings pages: mailboxes, folders, rules, a rule test, activity.

Administrators only; anyone else gets the CRM's 403 page (the selectors and services refuse).
Each view parses the request, calls one service or selector, and renders; a POST that worked
redirects, a refusal re-renders with the reason next to what was entered.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from crm.exceptions import Invalid, ServiceError
from crm.web import downloads
from crm.web.http import AuthedRequest
from mailconverter import imap, oauth2, services
from mailconverter.models import Mailbox, Outcome, Rule, ScanRun
from mailconverter.web import forms as page_forms
from mailconverter.web import oauth2_views, selectors
from mailconverter.web.forms import BlockForm, LedgerSearchForm, MailboxForm, RuleForm, TestRuleForm

# --- mailboxes ---------------------------------------------------------------------------------


@login_required
@require_GET
def mailbox_list(request: AuthedRequest) -> HttpResponse:
    rows = selectors.mailboxes(request.user)
    return render(request, "mailconverter/mailbox_list.html", {"rows": rows})


@login_required
def mailbox_create(request: AuthedRequest) -> HttpResponse:
    selectors.require_administrator(request.user)
    form = MailboxForm(request.POST or None, instance=Mailbox())
    if request.method == "POST" and form.is_valid():
        mailbox = _save_mailbox(request, form)
        if mailbox is not None:
            messages.success(request, f"Mailbox {mailbox.name} created. Now refresh its folders.")
            return redirect("mailconverter:folders", pk=mailbox.pk)
    return render(request, "mailconverter/mailbox_form.html", {"form": form})


@login_required
def mailbox_edit(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    form = MailboxForm(request.POST or None, instance=mailbox)
    if request.method == "POST":
        saved = _save_mailbox(request, form) if form.is_valid() else None
        if saved is not None:
            messages.success(request, f"Mailbox {saved.name} saved.")
            return redirect("mailconverter:mailbox", pk=saved.pk)
        # The form keeps what was typed; the page's header shows what is stored.
        mailbox.refresh_from_db()
    response = _mailbox_page(
        request,
        mailbox,
        "settings",
        {
            "form": form,
            "oauth2_providers": oauth2.providers(),
            "oauth2_redirect_uri": oauth2_views.redirect_uri(),
        },
    )
    response["Content-Security-Policy"] = oauth2_views.page_policy()
    return response


def _save_mailbox(request: AuthedRequest, form: MailboxForm) -> Mailbox | None:
    try:
        return services.save_mailbox(
            actor=request.user,
            mailbox=form.save(commit=False),
            password=form.cleaned_data.get("password") or None,
            oauth2=form.oauth2_grant(),
        )
    except Invalid as exc:
        for name, message in exc.fields.items():
            name = form.OAUTH2_FIELDS.get(name, name)
            form.add_error(name if name in form.fields else None, message)
        if not exc.fields:
            form.add_error(None, exc.detail)
    return None


@login_required
@require_POST
def mailbox_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    if request.POST.get("confirm", "").strip() != mailbox.name:
        messages.error(request, "Type the mailbox's name to confirm; nothing was deleted.")
        return redirect("mailconverter:mailbox", pk=mailbox.pk)
    services.delete_mailbox(actor=request.user, mailbox=mailbox)
    messages.success(request, f"Mailbox {mailbox.name} deleted.")
    return redirect("mailconverter:mailboxes")


@login_required
@require_POST
def connection_test(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    check = services.test_connection(mailbox)
    if request.htmx:
        return render(request, "mailconverter/_connection.html", {"check": check})
    (messages.success if check.ok else messages.error)(request, check.message)
    return redirect("mailconverter:mailbox", pk=mailbox.pk)


# --- folders -----------------------------------------------------------------------------------


@login_required
def folders(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    error = ""
    if request.method == "POST":
        try:
            services.select_folders(
                actor=request.user, mailbox=mailbox, names=request.POST.getlist("folders")
            )
        except Invalid as exc:
            error = exc.fields.get("folders", exc.detail)
        else:
            messages.success(request, "Folders to scan saved.")
            return redirect("mailconverter:folders", pk=mailbox.pk)
    return _mailbox_page(
        request, mailbox, "folders", {"folders": selectors.folders(mailbox), "error": error}
    )


@login_required
@require_POST
def folders_refresh(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    try:
        listed = services.refresh_folders(mailbox)
    except imap.ImapError as exc:
        messages.error(request, f"The folders could not be listed: {exc}")
    else:
        messages.success(request, f"The server lists {len(listed)} folders.")
    return redirect("mailconverter:folders", pk=mailbox.pk)


# --- rules -------------------------------------------------------------------------------------


@login_required
@require_GET
def rule_list(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    return _mailbox_page(request, mailbox, "rules", {"rules": selectors.rule_rows(mailbox)})


@login_required
def rule_create(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    return _rule_form(request, mailbox, None)


@login_required
def rule_edit(request: AuthedRequest, pk: int, rule_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    return _rule_form(request, mailbox, selectors.rule(mailbox, rule_pk))


def _rule_form(request: AuthedRequest, mailbox: Mailbox, rule: Rule | None) -> HttpResponse:
    if request.method != "POST":
        form = RuleForm.from_rule(rule) if rule is not None else RuleForm()
    else:
        form = RuleForm.from_post(request.POST)
        if not form.edit(request.POST.get("command", "save")):
            try:
                saved = services.save_rule(
                    actor=request.user, mailbox=mailbox, rule=rule, data=form.value()
                )
            except Invalid as exc:
                form.add_errors(exc.fields, exc.detail)
            else:
                messages.success(request, f"Rule “{saved}” saved.")
                return redirect("mailconverter:rules", pk=mailbox.pk)
    return _mailbox_page(
        request,
        mailbox,
        "rules",
        {
            "rule_form": form,
            "rule": rule,
            "field_choices": page_forms.FIELD_CHOICES,
            "operator_choices": page_forms.OPERATOR_CHOICES,
            "action_choices": page_forms.ACTION_CHOICES,
            "module_choices": page_forms.MODULE_CHOICES,
            "by_choices": page_forms.BY_CHOICES,
            "ticket_choices": services.ticket_choices(),
        },
    )


@login_required
@require_POST
def rule_delete(request: AuthedRequest, pk: int, rule_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    rule = selectors.rule(mailbox, rule_pk)
    services.delete_rule(actor=request.user, rule=rule)
    messages.success(request, f"Rule “{rule}” deleted.")
    return redirect("mailconverter:rules", pk=mailbox.pk)


@login_required
@require_POST
def rule_move(request: AuthedRequest, pk: int, rule_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    rule = selectors.rule(mailbox, rule_pk)
    try:
        services.move_rule(
            actor=request.user, rule=rule, direction=request.POST.get("direction", "")
        )
    except Invalid as exc:
        messages.error(request, exc.detail)
    return redirect("mailconverter:rules", pk=mailbox.pk)


@login_required
def rule_test(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    form = TestRuleForm(request.POST or None, request.FILES or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        try:
            preview = services.preview_rules(
                actor=request.user,
                mailbox=mailbox,
                raw=form.raw_bytes(),
                folder=form.cleaned_data["folder"],
            )
        except Invalid as exc:
            form.add_error("raw", exc.fields.get("raw", exc.detail))
    return _mailbox_page(request, mailbox, "test", {"form": form, "preview": preview})


# --- activity ----------------------------------------------------------------------------------


@login_required
@require_GET
def activity(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    search = LedgerSearchForm(request.GET or None)
    terms = search.cleaned_data if search.is_valid() else {}
    page = selectors.ledger_page(
        mailbox,
        sender=terms.get("sender", ""),
        subject=terms.get("subject", ""),
        outcome=terms.get("outcome", ""),
        page=request.GET.get("page"),
    )
    context: dict[str, Any] = {"search": search, "page": page, "query": _query(request)}
    if request.htmx and request.htmx.target == "ledger":
        response = render(request, "mailconverter/_ledger.html", {"mailbox": mailbox, **context})
        patch_vary_headers(response, ("HX-Request",))
        return response
    runs = selectors.recent_runs(mailbox)
    context |= {
        "runs": selectors.run_rows(runs),
        "chart": selectors.chart(runs),
        "quarantine": selectors.quarantine(mailbox),
        "blocked": selectors.blocked_senders(mailbox),
        "block_form": BlockForm(),
    }
    response = _mailbox_page(request, mailbox, "activity", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _query(request: AuthedRequest) -> str:
    """The search terms to carry into page links, without the page number."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@login_required
@require_POST
def scan(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    try:
        run = services.scan_now(actor=request.user, mailbox=mailbox)
    except ServiceError as exc:
        if request.htmx:
            return render(request, "mailconverter/_scan_refused.html", {"detail": exc.detail})
        messages.error(request, exc.detail)
        return redirect("mailconverter:activity", pk=mailbox.pk)
    if request.htmx:
        return _progress(request, mailbox, run)
    return redirect(f"{reverse('mailconverter:activity', kwargs={'pk': mailbox.pk})}?run={run.pk}")


@login_required
@require_GET
def scan_progress(request: AuthedRequest, pk: int, run_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    return _progress(request, mailbox, selectors.run(mailbox, run_pk))


def _progress(request: AuthedRequest, mailbox: Mailbox, run: ScanRun) -> HttpResponse:
    status = services.run_status(run)
    return render(
        request,
        "mailconverter/_scan_progress.html",
        {
            "mailbox": mailbox,
            "status": status,
            "counts": selectors.outcome_counts(status["counts"]),
        },
    )


@login_required
@require_POST
def quarantine_retry(request: AuthedRequest, pk: int, entry_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    held = selectors.quarantined(mailbox, entry_pk)
    try:
        entry = services.retry(actor=request.user, entry=held.entry)
    except Invalid as exc:
        messages.error(request, exc.detail)
    else:
        if entry.outcome == Outcome.FAILED:
            messages.error(request, f"The retry failed again: {entry.error}")
        else:
            messages.success(request, f"Retried: {entry.get_outcome_display()}.")
    return redirect(f"{reverse('mailconverter:activity', kwargs={'pk': mailbox.pk})}#quarantine")


@login_required
@require_GET
def quarantine_raw(request: AuthedRequest, pk: int, entry_pk: int) -> FileResponse:
    mailbox = selectors.mailbox(request.user, pk)
    held = selectors.quarantined(mailbox, entry_pk)
    return downloads.serve(
        held.raw.name,
        filename=f"{mailbox.name}-{held.entry.folder.name}-{held.entry.uid}.eml",
        content_type="message/rfc822",
        inline=False,
    )


@login_required
@require_POST
def sender_block(request: AuthedRequest, pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    form = BlockForm(request.POST)
    if form.is_valid():
        try:
            blocked = services.block_sender(
                actor=request.user,
                mailbox=mailbox,
                address=form.cleaned_data["address"],
                reason=form.cleaned_data["reason"],
            )
        except Invalid as exc:
            messages.error(request, exc.fields.get("address", exc.detail))
        else:
            messages.success(request, f"{blocked.address} is blocked on this mailbox.")
    else:
        messages.error(request, "Enter the email address to block.")
    return redirect(f"{reverse('mailconverter:activity', kwargs={'pk': mailbox.pk})}#blocked")


@login_required
@require_POST
def sender_unblock(request: AuthedRequest, pk: int, blocked_pk: int) -> HttpResponse:
    mailbox = selectors.mailbox(request.user, pk)
    blocked = selectors.blocked_sender(mailbox, blocked_pk)
    services.unblock_sender(actor=request.user, blocked=blocked)
    messages.success(request, f"{blocked.address} is no longer blocked.")
    return redirect(f"{reverse('mailconverter:activity', kwargs={'pk': mailbox.pk})}#blocked")


# --- the page around each tab ------------------------------------------------------------------

TABS = [
    ("settings", "Settings", "mailconverter:mailbox"),
    ("folders", "Folders", "mailconverter:folders"),
    ("rules", "Rules", "mailconverter:rules"),
    ("test", "Test a rule", "mailconverter:test_rule"),
    ("activity", "Activity", "mailconverter:activity"),
]


def _mailbox_page(
    request: AuthedRequest, mailbox: Mailbox, tab: str, context: dict[str, Any]
) -> HttpResponse:
    tabs = [(key, label, reverse(name, kwargs={"pk": mailbox.pk})) for key, label, name in TABS]
    run_pk = request.GET.get("run", "")
    return render(
        request,
        f"mailconverter/mailbox_{tab}.html",
        {
            "mailbox": mailbox,
            "tab": tab,
            "tabs": tabs,
            "follow_run": int(run_pk) if run_pk.isdigit() else None,
            **context,
        },
    )
