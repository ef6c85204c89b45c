"""Restore the ledger's one acting row per email (`converter_ledger_acted_once`).

0006 took `db_index` off `identity`. On PostgreSQL the schema editor then dropped every index
on that column alone that is not one of the model's `indexes`, and so also the partial unique
index of the model's `constraints`. Without it, two scans of one email in two mailboxes at the
same moment could both act on it. Where that happened, the rows keep what they made (their
tickets and links stay for an administrator to merge); all but the first acting row of an
email stop being its acting row, and say so, so that the index can be built again.
"""

from django.db import migrations
from django.db.models import Count

NAME = "converter_ledger_acted_once"
TWICE = "converted a second time, beside {where} (before the fix of 0007): check for a double"


def restore(apps, schema_editor):  # noqa: ANN001, ANN201
    ledger = apps.get_model("mailconverter", "LedgerEntry")
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if NAME in connection.introspection.get_constraints(cursor, ledger._meta.db_table):
            return
    doubled = (
        ledger.objects.filter(acted=True)
        .values("identity")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
        .values_list("identity", flat=True)
    )
    for identity in list(doubled):
        first, *later = (
            ledger.objects.filter(identity=identity, acted=True)
            .select_related("mailbox", "folder")
            .order_by("processed_at", "pk")
        )
        where = f"{first.mailbox.name}/{first.folder.name} UID {first.uid}"
        for entry in later:
            entry.acted = False
            entry.reason = TWICE.format(where=where)[:500]
            entry.save(update_fields=["acted", "reason"])
    constraint = next(c for c in ledger._meta.constraints if c.name == NAME)
    if connection.vendor == "postgresql":
        # An index is built only on a table with no foreign-key check still deferred.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    schema_editor.add_constraint(ledger, constraint)
    if connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")


class Migration(migrations.Migration):
    dependencies = [
        ("mailconverter", "0006_lean_indexes"),
    ]

    operations = [
        migrations.RunPython(restore, migrations.RunPython.noop, elidable=False),
    ]
