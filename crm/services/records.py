"""Writing records: create, update, move to the recycle bin, restore, purge, comment.

Every function owns its transaction, checks `crm.access`, keeps the address index in step and
writes the ChangeLog.

Batch work that writes many records (a mail scan) may run inside `remembering(memo)`: a
module's fields and the fields an actor may write are then read once into the memo instead of
at every write, and the caller empties the memo when they may have changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from crm import access, hooks, statements
from crm.exceptions import Invalid
from crm.models import (
    ChangeLog,
    Comment,
    Field,
    Group,
    Module,
    Record,
    RecordAddress,
    RecordReference,
    User,
)
from crm.models.modules import FieldType
from crm.services.fieldvalues import clean_values

Owner = User | Group

_memo: ContextVar[dict[str, Any] | None] = ContextVar("crm_records_memo", default=None)


@contextmanager
def remembering(memo: dict[str, Any]) -> Iterator[None]:
    """Within the block, definitions read for a write are kept in `memo` (see the module's
    docstring). The caller owns the memo: emptying it makes the next write read them again."""
    token = _memo.set(memo)
    try:
        yield
    finally:
        _memo.reset(token)


def create(
    *, actor: User, module: Module, data: dict[str, Any], owner: Owner | None = None
) -> Record:
    access.require_create(actor, module)
    fields = _fields(module)
    writable = _writable_fields(actor, module)
    values = clean_values(actor, fields, data, writable=writable, partial=False)
    now = timezone.now()
    record = Record(
        module=module,
        data=values,
        created_by=actor,
        modified_by=actor,
        created_at=now,
        modified_at=now,
    )
    _set_owner(record, owner or actor)
    # Everything refusable was refused above: inside a caller's transaction (a mail scan
    # creating many records) the writes need no savepoint of their own.
    with transaction.atomic(savepoint=False):
        record.number = _next_number(module)
        record.label = _label(fields, values, record.number)
        statements.insert(record)
        _index(record, fields, new=True)
        _log(record, actor, ChangeLog.Action.CREATE, {k: [None, v] for k, v in values.items()})
    return record


@transaction.atomic
def update(
    *, actor: User, record: Record, data: dict[str, Any], owner: Owner | None = None
) -> Record:
    record = _locked(record)
    access.require(actor, "edit", record)
    fields = _fields(record.module)
    writable = _writable_fields(actor, record.module)
    incoming = clean_values(actor, fields, data, writable=writable, partial=True)
    merged = {**record.data, **incoming}
    merged = {k: v for k, v in merged.items() if v is not None}
    _check_required(fields, merged)
    changes = {
        name: [record.data.get(name), merged.get(name)]
        for name in set(record.data) | set(merged)
        if record.data.get(name) != merged.get(name)
    }
    if owner is not None and owner != record.owner:
        changes["owner"] = [str(record.owner), str(owner)]
        _set_owner(record, owner)
    if not changes:
        return record
    record.data = merged
    record.label = _label(fields, merged, record.number)
    record.modified_by = actor
    record.modified_at = timezone.now()
    record.save()
    _index(record, fields, changed=set(changes))
    _log(record, actor, ChangeLog.Action.UPDATE, changes)
    return record


@transaction.atomic
def delete(*, actor: User, record: Record) -> None:
    """Move to the recycle bin; nothing a user does destroys a record."""
    record = _locked(record)
    access.require(actor, "delete", record)
    record.deleted_at = timezone.now()
    record.deleted_by = actor
    record.save(update_fields=["deleted_at", "deleted_by"])
    _log(record, actor, ChangeLog.Action.DELETE, {})


@transaction.atomic
def restore(*, actor: User, record: Record) -> None:
    record = _locked(record)
    access.require(actor, "restore", record)
    record.deleted_at = None
    record.deleted_by = None
    record.save(update_fields=["deleted_at", "deleted_by"])
    _log(record, actor, ChangeLog.Action.RESTORE, {})


@transaction.atomic
def purge(*, actor: User, record: Record) -> None:
    """Destroy a record from the recycle bin: administrators only; the audit trail stays."""
    record = _locked(record)
    if not record.is_deleted:
        raise Invalid("Only records in the recycle bin can be purged.")
    access.require(actor, "purge", record)
    _log(record, actor, ChangeLog.Action.PURGE, {})
    record.delete()


def add_comment(
    *,
    actor: User,
    record: Record,
    body: str,
    author_address: str = "",
    via_mail: bool = False,
    mail_note: str = "",
) -> Comment:
    """A comment by the actor, or, with `author_address`, a customer's comment that came by mail
    (the actor is then whoever brought it in, such as a mailbox's owner).

    `mail_note` says the comment's text was already mailed (an answer by mail). Once the
    comment is committed, `crm.hooks.comment_added` lets other apps act on it.
    """
    access.require(actor, "view", record)
    body = body.strip()
    if not body:
        raise Invalid(fields={"body": "Write a comment first."})
    with transaction.atomic(savepoint=False):  # checked above: only writes follow
        comment = Comment(
            record=record,
            author=None if author_address else actor,
            author_address=author_address[:254],
            body=body,
            created_at=timezone.now(),
            via_mail=via_mail,
            mail_note=mail_note[:500],
        )
        statements.insert(comment)
        _log(record, actor, ChangeLog.Action.COMMENT, {"comment": [None, body[:200]]})
        transaction.on_commit(lambda: hooks.comment_added.send(sender=Comment, comment=comment))
    return comment


# --- helpers -----------------------------------------------------------------------------------


def _remembered(key: str, load: Any) -> Any:
    memo = _memo.get()
    if memo is None:
        return load()
    if key not in memo:
        memo[key] = load()
    return memo[key]


def _fields(module: Module) -> list[Field]:
    return _remembered(f"fields:{module.pk}", lambda: list(module.fields.all()))  # type: ignore[no-any-return]


def _writable_fields(actor: User, module: Module) -> set[str]:
    return _remembered(  # type: ignore[no-any-return]
        f"writable:{actor.pk}:{module.pk}",
        lambda: {fa.field.name for fa in access.visible_fields(actor, module) if not fa.read_only},
    )


def _check_required(fields: list[Field], values: dict[str, Any]) -> None:
    missing = {
        f.name: "This field is required."
        for f in fields
        if f.required and values.get(f.name) in (None, "")
    }
    if missing:
        raise Invalid(fields=missing)


def _locked(record: Record) -> Record:
    """The record, locked until commit. Only its row (not its module's, which every new
    record's number updates), and not against rows that refer to it (a link, a comment)."""
    return (
        Record.objects.select_for_update(of=("self",), no_key=True)
        .select_related("module")
        .get(pk=record.pk)
    )


def _set_owner(record: Record, owner: Owner) -> None:
    if isinstance(owner, Group):
        record.owner_user, record.owner_group = None, owner
    elif isinstance(owner, User) and owner.is_active:
        record.owner_user, record.owner_group = owner, None
    else:
        raise Invalid(fields={"owner": "Choose an active user or a group."})


def _next_number(module: Module) -> str:
    """The module's next number; the row lock serialises concurrent creations. One statement
    (the ORM's update cannot return the value it wrote)."""
    table = connection.ops.quote_name(Module._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET next_number = next_number + 1 WHERE id = %s "  # noqa: S608
            "RETURNING next_number",
            [module.pk],
        )
        taken = cursor.fetchone()[0] - 1
    return f"{module.number_prefix}{taken}"


def _label(fields: list[Field], values: dict[str, Any], number: str) -> str:
    parts = [str(values[f.name]) for f in fields if f.is_label and values.get(f.name)]
    return " ".join(parts)[:255] or number


def _index(
    record: Record, fields: list[Field], *, new: bool = False, changed: set[str] | None = None
) -> None:
    """Keep the address and reference indexes in step with the record's values.

    A new record has no rows to replace; an update replaces only the index whose fields
    `changed` (None: both).
    """

    def touched(kind: str) -> bool:
        return changed is None or any(f.type == kind and f.name in changed for f in fields)

    if touched(FieldType.EMAIL):
        _index_addresses(record, fields, new=new)
    if touched(FieldType.REFERENCE):
        if not new:
            RecordReference.objects.filter(record=record).delete()
        for f in fields:  # a record has a few: one cached INSERT each
            if f.type == FieldType.REFERENCE and record.data.get(f.name):
                statements.insert(
                    RecordReference(record=record, field=f, target_id=record.data[f.name])
                )


def _index_addresses(record: Record, fields: list[Field], *, new: bool = False) -> None:
    if not new:
        RecordAddress.objects.filter(record=record).delete()
    for f in (f for f in fields if f.type == FieldType.EMAIL):
        value = record.data.get(f.name)
        if value:
            address = str(value).lower()
            domain = address.rpartition("@")[2]
            statements.insert(RecordAddress(record=record, field=f, address=address, domain=domain))


def _log(record: Record, actor: User | None, action: str, changes: dict[str, Any]) -> None:
    entry = ChangeLog(
        record=record,
        module_id=record.module_id,
        record_number=record.number,
        actor=actor,
        at=timezone.now(),
        action=action,
        changes=changes,
    )
    statements.insert(entry)  # every write logs; a scan writes several per email


def module_of(record: Record) -> Module:
    """The record's module, read once per `remembering` block rather than once per record."""
    if Record.module.is_cached(record):
        return record.module
    record.module = _remembered(
        f"module:{record.module_id}", lambda: Module.objects.get(pk=record.module_id)
    )
    return record.module


def log_change(*, record: Record, actor: User | None, action: str, changes: dict[str, Any]) -> None:
    """For other services (linking, ingest) that change what hangs off a record."""
    _log(record, actor, action, changes)
