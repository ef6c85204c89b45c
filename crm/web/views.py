"""The CRM's pages. Each view parses the request, calls one service or selector, and renders."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from crm import access
from crm.exceptions import Invalid, NotFound
from crm.models.modules import FieldType
from crm.selectors import compose as compose_selectors
from crm.selectors import messages as message_selectors
from crm.selectors import records as selectors
from crm.services import mail, tracking
from crm.services import records as record_service
from crm.web import extensions
from crm.web.forms import RecordForm
from crm.web.http import AuthedRequest

TABS = ("messages", "documents", "comments", "history")
# List columns show plain values; a reference holds a record id and long text does not fit a cell.
_NOT_COLUMNS = {FieldType.REFERENCE, FieldType.TEXTAREA}


@login_required
def home(request: AuthedRequest) -> HttpResponse:
    return render(
        request,
        "crm/home.html",
        {"recent": selectors.recent_changes(request.user)},
    )


@login_required
def record_list(request: AuthedRequest, module: str) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    q = request.GET.get("q", "")
    sort = request.GET.get("sort", "modified")
    page = selectors.record_page(
        request.user,
        mod,
        q=q,
        sort=sort,
        page=request.GET.get("page"),
        per_page=settings.CRM_PAGE_SIZE,
    )
    columns = [
        fa
        for fa in access.visible_fields(request.user, mod)
        if not fa.field.is_label and fa.field.type not in _NOT_COLUMNS
    ][:3]
    context = {
        "module": mod,
        "page": page,
        "q": q,
        "sort": sort,
        "columns": columns,
        "can_create": access.can_create(request.user, mod),
        "list_actions": extensions.list_actions(request.user, mod),
    }
    # htmx asks for the table alone, except when it restores a page missing from its history
    # cache; the same URL then serves two bodies, so caches must key on HX-Request.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "crm/_record_table.html" if partial else "crm/record_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@login_required
def record_detail(request: AuthedRequest, module: str, pk: int) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk)
    return render(
        request,
        "crm/record_detail.html",
        {
            "module": mod,
            "record": record,
            "fields": selectors.shown_fields(request.user, record),
            "can_edit": access.can(request.user, "edit", record),
            "can_delete": access.can(request.user, "delete", record),
            "can_compose": compose_selectors.can_compose(request.user, record),
            "extra_actions": extensions.record_actions(request.user, record),
            "panels": extensions.record_panels(request.user, record),
            "tabs": TABS,
            "active_tab": request.GET.get("tab") if request.GET.get("tab") in TABS else TABS[0],
        },
    )


@login_required
def record_tab(request: AuthedRequest, module: str, pk: int, tab: str) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk)
    if tab not in TABS:
        raise NotFound("No such tab.")
    context: dict[str, object] = {"module": mod, "record": record, "tabs": TABS, "tab": tab}
    if tab == "comments":
        context["comments"] = selectors.comments(request.user, record)
        context["comment_hints"] = extensions.comment_hints(request.user, record)
    elif tab == "messages":
        page = message_selectors.record_messages(request.user, record, page=request.GET.get("page"))
        context["page"] = page
        context["deliveries"] = mail.delivery_status(request.user, record)
        context["opens"] = tracking.opens_by_message(request.user, list(page.object_list))
    elif tab == "documents":
        context["documents"] = message_selectors.record_documents(request.user, record)
    elif tab == "history":
        context["history"] = selectors.history(request.user, record)
    return render(request, f"crm/tabs/{tab}.html", context)


@login_required
def record_create(request: AuthedRequest, module: str) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    access.require_create(request.user, mod)
    form = RecordForm(request.user, mod, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            record = record_service.create(
                actor=request.user, module=mod, data=form.values(), owner=form.owner()
            )
        except Invalid as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"{mod.singular} {record.number} created.")
            return redirect("crm:record_detail", module=mod.name, pk=record.pk)
    return render(request, "crm/record_form.html", {"module": mod, "form": form})


@login_required
def record_edit(request: AuthedRequest, module: str, pk: int) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk, "edit")
    form = RecordForm(request.user, mod, record, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            record_service.update(
                actor=request.user, record=record, data=form.values(), owner=form.owner()
            )
        except Invalid as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"{record.number} saved.")
            return redirect("crm:record_detail", module=mod.name, pk=record.pk)
    return render(request, "crm/record_form.html", {"module": mod, "form": form, "record": record})


@login_required
@require_POST
def record_delete(request: AuthedRequest, module: str, pk: int) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk)
    record_service.delete(actor=request.user, record=record)
    messages.success(request, f"{record.number} moved to the recycle bin.")
    return redirect("crm:record_list", module=mod.name)


@login_required
@require_POST
def comment_add(request: AuthedRequest, module: str, pk: int) -> HttpResponse:
    mod = selectors.visible_module(request.user, module)
    record = access.get_record(request.user, mod, pk)
    try:
        record_service.add_comment(
            actor=request.user, record=record, body=request.POST.get("body", "")
        )
    except Invalid as exc:
        messages.error(request, exc.detail)
    url = reverse("crm:record_detail", kwargs={"module": mod.name, "pk": record.pk})
    return redirect(f"{url}?tab=comments")


@login_required
def recycle_bin(request: AuthedRequest) -> HttpResponse:
    return render(
        request, "crm/recycle_bin.html", {"sections": selectors.recycle_bin(request.user)}
    )


@login_required
@require_POST
def record_restore(request: AuthedRequest, pk: int) -> HttpResponse:
    record = selectors.deleted_record(request.user, pk)
    record_service.restore(actor=request.user, record=record)
    messages.success(request, f"{record.number} restored.")
    return redirect("crm:recycle_bin")


@login_required
@require_POST
def record_purge(request: AuthedRequest, pk: int) -> HttpResponse:
    record = selectors.deleted_record(request.user, pk)
    number = record.number
    record_service.purge(actor=request.user, record=record)
    messages.success(request, f"{number} purged for good.")
    return redirect("crm:recycle_bin")


def _form_errors(form: RecordForm, exc: Invalid) -> None:
    for name, message in exc.fields.items():
        form.add_error(name if name in form.fields else None, message)
    if not exc.fields:
        form.add_error(None, exc.detail)
