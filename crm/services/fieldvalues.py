"""Checking and normalising record values against the module's fields."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import connection

from crm import access, statements
from crm.exceptions import Invalid
from crm.models import Field, Record, User
from crm.models.modules import FieldType

_PHONE = re.compile(r"^[0-9+()./\- ]{3,40}$")
_TEXT_MAX = 255


def clean_values(
    actor: User, fields: list[Field], data: dict[str, Any], *, writable: set[str], partial: bool
) -> dict[str, Any]:
    """Values ready to store; raises Invalid naming each bad field.

    Empty values become None (the caller drops them). On create (`partial=False`), required
    fields must be present.
    """
    by_name = {f.name: f for f in fields}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, raw in data.items():
        f = by_name.get(name)
        if f is None:
            errors[name] = "No such field."
        elif name not in writable:
            errors[name] = "You may not change this field."
        else:
            try:
                values[name] = _clean(actor, f, raw)
            except ValidationError as exc:
                errors[name] = " ".join(exc.messages)
    errors |= _check_references(actor, by_name, values)
    if not partial:
        for f in fields:
            if f.required and values.get(f.name) in (None, "") and f.name not in errors:
                errors[f.name] = "This field is required."
        values = {k: v for k, v in values.items() if v is not None}
    if errors:
        raise Invalid(fields=errors)
    return values


def _clean(actor: User, f: Field, raw: Any) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    cleaner = _CLEANERS[FieldType(f.type)]
    return cleaner(actor, f, raw)


def _text(limit: int | None):  # type: ignore[no-untyped-def]
    def clean(actor: User, f: Field, raw: Any) -> str:
        value = str(raw).strip()
        if limit and len(value) > limit:
            raise ValidationError(f"At most {limit} characters.")
        return value

    return clean


def _email(actor: User, f: Field, raw: Any) -> str:
    value = str(raw).strip()
    EmailValidator("Enter a valid email address.")(value)
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _phone(actor: User, f: Field, raw: Any) -> str:
    value = str(raw).strip()
    if not _PHONE.match(value):
        raise ValidationError("Enter a phone number (digits, spaces, + ( ) - . /).")
    return value


def _url(actor: User, f: Field, raw: Any) -> str:
    value = str(raw).strip()
    if "://" not in value:
        value = f"https://{value}"
    URLValidator(schemes=["http", "https"], message="Enter a valid web address.")(value)
    return value


def _number(actor: User, f: Field, raw: Any) -> str:
    if isinstance(raw, bool):
        raise ValidationError("Enter a number.")
    try:
        value = Decimal(str(raw).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise ValidationError("Enter a number.") from exc
    if not value.is_finite():
        raise ValidationError("Enter a number.")
    return format(value.normalize(), "f")


def _date(actor: User, f: Field, raw: Any) -> str:
    if isinstance(raw, dt.date):
        return raw.isoformat()
    try:
        return dt.date.fromisoformat(str(raw).strip()).isoformat()
    except ValueError as exc:
        raise ValidationError("Enter a date as YYYY-MM-DD.") from exc


def _datetime(actor: User, f: Field, raw: Any) -> str:
    try:
        value = raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(str(raw))
    except ValueError as exc:
        raise ValidationError("Enter a date and time as YYYY-MM-DDTHH:MM.") from exc
    if value.tzinfo is None:
        from django.utils import timezone

        value = timezone.make_aware(value)
    return value.isoformat()


def _picklist(actor: User, f: Field, raw: Any) -> str:
    value = str(raw).strip()
    if value not in (f.choices or []):
        raise ValidationError(f"Choose one of: {', '.join(map(str, f.choices or []))}.")
    return value


def _boolean(actor: User, f: Field, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValidationError("Enter yes or no.")


def _reference(actor: User, f: Field, raw: Any) -> int:
    """A record's id; `_check_references` then checks them all in one query."""
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ValidationError("Choose a record.") from exc


def _check_references(
    actor: User, by_name: dict[str, Field], values: dict[str, Any]
) -> dict[str, str]:
    """A reference must point to a live record the actor may see, in the right module."""
    wanted = {
        name: pk
        for name, pk in values.items()
        if pk is not None and by_name[name].type == FieldType.REFERENCE
    }
    if not wanted:
        return {}
    found = {r.pk: r for r in _live_targets(sorted(set(wanted.values())))}
    errors = {}
    for name, pk in wanted.items():
        target, module_id = found.get(pk), by_name[name].reference_module_id
        wrong_module = target is not None and module_id and target.module_id != module_id
        # Visible: the decision `access.records(actor, module, "view")` makes, row by row.
        if target is None or wrong_module or not access.can(actor, "view", target):
            errors[name] = "No such record."
    return errors


_TARGET_FIELDS = ["id", "module_id", "owner_user_id", "owner_group_id", "deleted_at"]


def _live_targets(pks: list[int]) -> list[Record]:
    """`Record.objects.filter(pk__in=pks, deleted_at=None).only(…what access.can reads)`,
    written out: every record saved with a reference checks it, a scan's tickets included."""
    marks = ", ".join(["%s"] * len(pks))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, module_id, owner_user_id, owner_group_id "  # noqa: S608
            f"FROM {statements.table(Record)} WHERE id IN ({marks}) AND deleted_at IS NULL",
            pks,
        )
        rows = cursor.fetchall()
    return [Record.from_db(connection.alias, _TARGET_FIELDS, [*row, None]) for row in rows]


_CLEANERS = {
    FieldType.TEXT: _text(_TEXT_MAX),
    FieldType.TEXTAREA: _text(None),
    FieldType.EMAIL: _email,
    FieldType.PHONE: _phone,
    FieldType.URL: _url,
    FieldType.NUMBER: _number,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.PICKLIST: _picklist,
    FieldType.REFERENCE: _reference,
    FieldType.BOOLEAN: _boolean,
}
