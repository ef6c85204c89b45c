"""What the compose page of a record offers: whether it exists, its prefilled recipients."""

from __future__ import annotations

from email.headerregistry import Address

from crm import access
from crm.exceptions import Forbidden
from crm.models import Record, User
from crm.models.modules import FieldType
from crm.selectors import records as record_selectors


def can_compose(user: User, record: Record) -> bool:
    """An email can be written from a record the user may edit, of a module that takes emails
    and has an address to write to: an email field, or a reference to a module with one
    (an Opportunity's contact)."""
    if not record.module.accepts_messages or not access.can(user, "edit", record):
        return False
    for fa in access.visible_fields(user, record.module):
        if fa.field.type == FieldType.EMAIL:
            return True
        target = fa.field.reference_module
        if (
            fa.field.type == FieldType.REFERENCE
            and target is not None
            and access.visible_email_fields(user, [target])
        ):
            return True
    return False


def require_compose(user: User, record: Record) -> None:
    """NotFound for an invisible record, Forbidden for one the user may only view."""
    access.require(user, "edit", record)
    if not can_compose(user, record):
        raise Forbidden("Emails cannot be written from this record.", code="no_compose")


def default_recipients(user: User, record: Record) -> list[str]:
    """The To of a new email: the record's first address the user sees; for a record without
    one, the first address of each record it refers to (the contact of a ticket)."""
    own = _first_address(user, record)
    if own:
        return [own]
    found = []
    for shown in record_selectors.shown_fields(user, record):
        if shown.type == FieldType.REFERENCE and shown.link is not None:
            address = _first_address(user, shown.link)
            if address and address not in found:
                found.append(address)
    return found


def _first_address(user: User, record: Record) -> str:
    for shown in record_selectors.shown_fields(user, record):
        if shown.type == FieldType.EMAIL and shown.display.strip():
            email = shown.display.strip()
            try:
                return str(Address(display_name=" ".join(record.label.split()), addr_spec=email))
            except (ValueError, IndexError):
                return email
    return ""
