"""ModulePermission's action flags become can_*: a field named "delete" shadowed Model.delete."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("crm", "0005_record_references")]

    operations = [
        *(
            migrations.RenameField("modulepermission", action, f"can_{action}")
            for action in ("view", "create", "edit", "delete")
        ),
        *(
            migrations.AlterField(
                "modulepermission", f"can_{action}", models.BooleanField(action, default=True)
            )
            for action in ("view", "create", "edit", "delete")
        ),
    ]
