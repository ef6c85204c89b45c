"""The built-in modules and their fields, as data: custom modules work the same way."""

from __future__ import annotations

from django.db import migrations

TICKET_STATUSES = ["Open", "In progress", "Wait for response", "Answered by customer", "Closed"]
PRIORITIES = ["Low", "Normal", "High", "Urgent"]

# name, singular, plural, prefix, icon, accepts messages, accepts documents, fields
# field: (name, label, type, options) with options among required, label, choices, ref
MODULES = [
    ("Companies", "Company", "Companies", "CMP", "🏢", True, True, [
        ("name", "Company name", "text", {"required": True, "label": True}),
        ("website", "Website", "url", {}),
        ("email", "Email", "email", {}),
        ("phone", "Phone", "phone", {}),
        ("industry", "Industry", "picklist", {"choices": [
            "Consulting", "Education", "Finance", "Healthcare", "Manufacturing", "Retail",
            "Software", "Other"]}),
        ("city", "City", "text", {}),
        ("country", "Country", "text", {}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Contacts", "Contact", "Contacts", "CON", "👤", True, True, [
        ("first_name", "First name", "text", {"label": True}),
        ("last_name", "Last name", "text", {"required": True, "label": True}),
        ("email", "Email", "email", {}),
        ("secondary_email", "Secondary email", "email", {}),
        ("phone", "Phone", "phone", {}),
        ("mobile", "Mobile", "phone", {}),
        ("job_title", "Job title", "text", {}),
        ("company", "Company", "reference", {"ref": "Companies"}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Leads", "Lead", "Leads", "LEA", "🌱", True, True, [
        ("first_name", "First name", "text", {"label": True}),
        ("last_name", "Last name", "text", {"required": True, "label": True}),
        ("company_name", "Company name", "text", {}),
        ("email", "Email", "email", {}),
        ("phone", "Phone", "phone", {}),
        ("status", "Status", "picklist", {"choices": [
            "New", "Contacted", "Qualified", "Lost"]}),
        ("source", "Source", "picklist", {"choices": [
            "Web", "Email", "Phone", "Referral", "Trade show", "Other"]}),
        ("converted", "Converted", "boolean", {}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Opportunities", "Opportunity", "Opportunities", "OPP", "💼", True, True, [
        ("name", "Opportunity name", "text", {"required": True, "label": True}),
        ("company", "Company", "reference", {"ref": "Companies"}),
        ("contact", "Contact", "reference", {"ref": "Contacts"}),
        ("amount", "Amount", "number", {}),
        ("stage", "Stage", "picklist", {"required": True, "choices": [
            "Prospecting", "Qualification", "Proposal", "Negotiation", "Closed won",
            "Closed lost"]}),
        ("close_date", "Expected close date", "date", {}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Tickets", "Ticket", "Tickets", "TT", "🎫", True, True, [
        ("title", "Title", "text", {"required": True, "label": True}),
        ("status", "Status", "picklist", {"required": True, "choices": TICKET_STATUSES}),
        ("priority", "Priority", "picklist", {"choices": PRIORITIES}),
        ("contact", "Contact", "reference", {"ref": "Contacts"}),
        ("company", "Company", "reference", {"ref": "Companies"}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Documents", "Document", "Documents", "DOC", "📄", False, False, [
        ("title", "Title", "text", {"required": True, "label": True}),
        ("folder", "Folder", "text", {}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Events", "Event", "Events", "EV", "📅", True, True, [
        ("subject", "Subject", "text", {"required": True, "label": True}),
        ("type", "Type", "picklist", {"required": True, "choices": ["Call", "Meeting"]}),
        ("start", "Start", "datetime", {"required": True}),
        ("end", "End", "datetime", {}),
        ("location", "Location", "text", {}),
        ("related_to", "Related to", "reference", {}),
        ("attendees", "Attendees", "textarea", {}),
        ("description", "Description", "textarea", {}),
    ]),
    ("Tasks", "Task", "Tasks", "TSK", "✅", True, True, [
        ("subject", "Subject", "text", {"required": True, "label": True}),
        ("due_date", "Due date", "date", {}),
        ("status", "Status", "picklist", {"required": True, "choices": [
            "Not started", "In progress", "Completed", "Deferred"]}),
        ("priority", "Priority", "picklist", {"choices": PRIORITIES}),
        ("related_to", "Related to", "reference", {}),
        ("description", "Description", "textarea", {}),
    ]),
]


def create_modules(apps, schema_editor):  # type: ignore[no-untyped-def]
    Module = apps.get_model("crm", "Module")
    Field = apps.get_model("crm", "Field")
    by_name = {}
    for position, (name, singular, plural, prefix, icon, msgs, docs, _) in enumerate(MODULES):
        by_name[name] = Module.objects.create(
            name=name, singular=singular, plural=plural, number_prefix=prefix, icon=icon,
            accepts_messages=msgs, accepts_documents=docs, is_custom=False,
            position=(position + 1) * 10, default_sharing="public_read_write_delete",
        )
    for name, *_, fields in MODULES:
        for position, (fname, label, ftype, opts) in enumerate(fields):
            Field.objects.create(
                module=by_name[name], name=fname, label=label, type=ftype,
                required=opts.get("required", False), is_label=opts.get("label", False),
                choices=opts.get("choices", []), position=(position + 1) * 10, is_custom=False,
                reference_module=by_name.get(opts.get("ref")),
            )


def remove_modules(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("crm", "Module").objects.filter(is_custom=False).delete()


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial")]
    operations = [migrations.RunPython(create_modules, remove_modules)]
