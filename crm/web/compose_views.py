"""Writing an email from a record, and the image that counts its openings.

The compose page posts to `crm.services.mail.send`; a template is applied by posting the form
with the "Use template" button, so addresses already typed are kept (uploaded files must be
chosen again, as browsers never refill a file field). The editor (crm/static/crm/editor.js)
writes HTML into the body textarea; without JavaScript the textarea is the editor.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_safe

from crm import access
from crm.email.sanitize import sanitize_html
from crm.exceptions import Invalid
from crm.models import Document, Record
from crm.selectors import compose as compose_selectors
from crm.selectors import messages as message_selectors
from crm.selectors import records as record_selectors
from crm.services import mail, mail_templates, tracking
from crm.web.http import AuthedRequest

_FIELDS = ("to", "cc", "bcc", "subject", "body", "documents", "uploads")
_NO_STORE = "no-store, no-cache, must-revalidate, max-age=0, private"


class ComposeForm(forms.Form):
    template = forms.TypedChoiceField(
        label="Template", required=False, coerce=int, empty_value=None
    )
    to = forms.CharField(label="To", max_length=4000, required=False)
    cc = forms.CharField(label="Cc", max_length=4000, required=False)
    bcc = forms.CharField(label="Bcc", max_length=4000, required=False)
    subject = forms.CharField(label="Subject", max_length=900, required=False, strip=False)
    body = forms.CharField(
        label="Message", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 14})
    )
    documents = forms.TypedMultipleChoiceField(
        label="Attach documents of this record",
        required=False,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, documents: list[Document], templates: list[Any], **kw: Any):
        super().__init__(*args, **kw)
        documents_field = self.fields["documents"]
        template_field = self.fields["template"]
        assert isinstance(documents_field, forms.ChoiceField)  # noqa: S101 (typing)
        assert isinstance(template_field, forms.ChoiceField)  # noqa: S101 (typing)
        documents_field.choices = [(d.pk, d.title) for d in documents]
        template_field.choices = [("", "(none)")] + [(t.pk, t.name) for t in templates]
        for name in ("to", "cc", "bcc"):
            self.fields[name].widget.attrs.update({"autocomplete": "email", "spellcheck": "false"})


@login_required
@require_http_methods(["GET", "POST"])
def compose(request: AuthedRequest, module: str, pk: int) -> HttpResponse:
    record = _record(request, module, pk)
    documents = list(message_selectors.record_documents(request.user, record))
    templates = list(mail_templates.templates_for(actor=request.user, record=record))
    options: dict[str, Any] = {"documents": documents, "templates": templates}
    warnings: list[str] = []
    if request.method != "POST":
        initial = {"to": ", ".join(compose_selectors.default_recipients(request.user, record))}
        return _page(request, record, ComposeForm(initial=initial, **options), warnings)
    form = ComposeForm(request.POST, **options)
    if not form.is_valid():
        return _page(request, record, form, warnings, status=400)
    data = form.cleaned_data
    if request.POST.get("action") == "template":
        form, warnings = _apply_template(request, record, form, options)
        return _page(request, record, form, warnings)
    try:
        mail.send(actor=request.user, record=record, draft=_draft(request, data))
    except Invalid as exc:
        _add_errors(form, exc)
        return _page(request, record, form, warnings, status=400)
    messages.success(request, f"Email “{data['subject'] or '(no subject)'}” sent.")
    url = reverse("crm:record_detail", kwargs={"module": record.module.name, "pk": record.pk})
    return redirect(f"{url}?tab=messages")


def _draft(request: AuthedRequest, data: dict[str, Any]) -> mail.Draft:
    return mail.Draft(
        to=[data["to"]],
        cc=[data["cc"]],
        bcc=[data["bcc"]],
        subject=data["subject"],
        body_html=data["body"],
        documents=data["documents"],
        uploads=[
            mail.Upload(f.name or "attachment", f.content_type or "", f.read())
            for f in request.FILES.getlist("uploads")
        ],
    )


@require_safe
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """The tracking image (public). Every valid URL gets the same image whether or not it
    counted; anything else a plain 404. Never cached, so each opening asks again."""
    known = tracking.count_open(
        token=token,
        signed_in=request.user.is_authenticated,
        referer=request.headers.get("Referer", ""),
    )
    if known:
        response = HttpResponse(tracking.GIF, content_type="image/gif")
    else:
        response = HttpResponse(b"Not found", content_type="text/plain", status=404)
    response["Cache-Control"] = _NO_STORE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _record(request: AuthedRequest, module: str, pk: int) -> Record:
    mod = record_selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk)
    compose_selectors.require_compose(request.user, record)
    return record


def _apply_template(
    request: AuthedRequest, record: Record, form: ComposeForm, options: dict[str, Any]
) -> tuple[ComposeForm, list[str]]:
    """The posted form again, subject and body taken from the chosen template."""
    values = {name: form.cleaned_data.get(name) for name in ("to", "cc", "bcc", "documents")}
    template_id = form.cleaned_data.get("template")
    if template_id is None:
        fresh = ComposeForm(initial={**form.cleaned_data}, **options)
        return fresh, ["Choose a template first."]
    template = mail_templates.template_for(
        actor=request.user, record=record, template_id=template_id
    )
    subject, body, warnings = mail_templates.render(
        actor=request.user, template=template, record=record
    )
    initial = {**values, "template": template_id, "subject": subject, "body": body}
    return ComposeForm(initial=initial, **options), warnings


def _add_errors(form: ComposeForm, exc: Invalid) -> None:
    for name, text in exc.fields.items():
        if name == "uploads":
            form.add_error(None, text)
        else:
            form.add_error(name if name in form.fields else None, text)
    if not exc.fields:
        form.add_error(None, exc.detail)


def _page(
    request: AuthedRequest,
    record: Record,
    form: ComposeForm,
    warnings: list[str],
    *,
    status: int = 200,
) -> HttpResponse:
    body = form["body"].value() or ""
    return render(
        request,
        "crm/compose.html",
        {
            "module": record.module,
            "record": record,
            "form": form,
            "lines": [form[name] for name in ("to", "cc", "bcc", "subject")],
            "warnings": warnings,
            # The editor shows HTML as HTML: only what an email may hold reaches the page.
            "body_html": sanitize_html(body, allow_remote_images=True).html if body else "",
        },
        status=status,
    )
