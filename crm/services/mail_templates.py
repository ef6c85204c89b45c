"""Email templates with merge fields, rendered for one user on one record.

Administrators write templates; the text is not trusted with any power. It is never given to
the Django template engine: a merge field is `{{ prefix.name }}` and nothing else, replaced by
a regex from a table of values built for the sending user, so a template reaches exactly the
fields that user sees on the page and nothing more (no attributes, no methods, no settings).

Names a template may use:

- `record.number`, `record.label`, `record.<field>`: the record the email is sent from;
  the same under the record's module name (`contact.first_name` on a Contact);
- `<reference field>.<field>` and `<module>.<field>` for the records the record refers to
  (`contact.first_name`, `company.name` on a Ticket), when the user may see them;
- `user.first_name`, `user.last_name`, `user.full_name`, `user.email`: the sending user.

Every value comes from `access.visible_fields` of the user; references only when
`access.can(user, "view", target)`. A name that is unknown, or names a field the user does not
see, is **left in the text as typed** and reported as a warning on the compose page: the user
sees `{{ contact.fax }}` in the editor and fixes it, instead of a customer receiving "Dear ,".
An unknown field and a hidden one get the same words, so the warning confirms nothing. A known
field that is empty renders empty, with a warning. Values are HTML-escaped in the body and
flattened to one line in the subject.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape

from django.db.models import Q, QuerySet

from crm import access
from crm.email.sanitize import sanitize_html
from crm.exceptions import NotFound
from crm.models import EmailTemplate, Record, User
from crm.models.modules import FieldType
from crm.selectors import records as record_selectors

MERGE_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def templates_for(*, actor: User, record: Record) -> QuerySet[EmailTemplate]:
    """The templates offered on this record's compose page: its module's and the general ones."""
    access.require(actor, "view", record)
    return EmailTemplate.objects.filter(is_active=True).filter(
        Q(module__isnull=True) | Q(module_id=record.module_id)
    )


def template_for(*, actor: User, record: Record, template_id: int) -> EmailTemplate:
    found = templates_for(actor=actor, record=record).filter(pk=template_id).first()
    if found is None:
        raise NotFound("No such template.")
    return found


def render(*, actor: User, template: EmailTemplate, record: Record) -> tuple[str, str, list[str]]:
    """The template's subject and HTML body filled in for `actor` on `record`, and warnings."""
    access.require(actor, "view", record)
    values = merge_values(actor, record)
    warnings: dict[str, str] = {}
    subject = _fill(template.subject, values, warnings, one_line)
    body = _fill(template.body_html, values, warnings, escape)
    # The body goes into the compose page's editor: only what an email may hold (nh3).
    body = sanitize_html(body, allow_remote_images=True).html
    return subject, body, list(warnings.values())


def merge_values(actor: User, record: Record) -> dict[str, str]:
    """Every merge field name the user may use on this record, with its value as text."""
    values: dict[str, str] = {}
    _add_user(values, actor)
    # Referenced records first: the record's own names win where a name means both.
    for prefix_names, target in _visible_references(actor, record):
        for prefix in prefix_names:
            _add_record(values, prefix, actor, target, overwrite=False)
    _add_record(values, "record", actor, record, overwrite=True)
    _add_record(values, module_name(record), actor, record, overwrite=True)
    return values


def module_name(record: Record) -> str:
    """A module's merge field prefix: its singular label, lower case ("contact")."""
    return _NOT_NAME.sub("_", record.module.singular.lower()).strip("_") or "record"


def one_line(value: str) -> str:
    return " ".join(value.split())


def _fill(
    text: str,
    values: dict[str, str],
    warnings: dict[str, str],
    quote: Callable[[str], str],
) -> str:
    def replace(match: re.Match[str]) -> str:
        name = f"{match.group(1)}.{match.group(2)}".lower()
        if name not in values:
            warnings[name] = (
                f"{{{{ {name} }}}} is not a field you can see on this record: it was left as "
                "typed. Replace it before sending."
            )
            return match.group(0)
        value = values[name]
        if not value:
            warnings.setdefault(name, f"{{{{ {name} }}}} is empty on this record.")
        return quote(value)

    return MERGE_FIELD.sub(replace, text)


def _add_user(values: dict[str, str], actor: User) -> None:
    values["user.first_name"] = actor.first_name
    values["user.last_name"] = actor.last_name
    values["user.full_name"] = actor.get_full_name()
    values["user.email"] = actor.email


def _add_record(
    values: dict[str, str], prefix: str, actor: User, record: Record, *, overwrite: bool
) -> None:
    found = {f"{prefix}.number": record.number, f"{prefix}.label": record.label}
    for shown in record_selectors.shown_fields(actor, record):
        if shown.type == FieldType.REFERENCE:
            # The referred record's name; none for a record the user cannot see.
            found[f"{prefix}.{shown.name}".lower()] = shown.link.label if shown.link else ""
        else:
            found[f"{prefix}.{shown.name}".lower()] = shown.display
    for name, value in found.items():
        if overwrite or name not in values:
            values[name] = one_line(value) if name.endswith((".number", ".label")) else value


def _visible_references(actor: User, record: Record) -> list[tuple[list[str], Record]]:
    """The records this one refers to through fields the user sees, that the user may see,
    each with its prefixes: the field's name and the target's module name."""
    found = []
    for shown in record_selectors.shown_fields(actor, record):
        if shown.type == FieldType.REFERENCE and shown.link is not None:
            target = shown.link
            found.append(([shown.name.lower(), module_name(target)], target))
    return found
