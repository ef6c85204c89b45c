"""Modules and their fields are data, so custom modules behave exactly like built-in ones."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

identifier = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_]{0,62}$",
    "Use letters, digits and underscores, starting with a letter.",
)


class Sharing(models.TextChoices):
    """Organisation-wide default access to a module's records (vtiger's four levels)."""

    PRIVATE = "private", "Private"
    PUBLIC_READ = "public_read", "Public: read only"
    PUBLIC_READ_WRITE = "public_read_write", "Public: read and write"
    PUBLIC_READ_WRITE_DELETE = "public_read_write_delete", "Public: read, write and delete"


class Module(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[identifier])
    singular = models.CharField("singular label", max_length=100)
    plural = models.CharField("plural label", max_length=100)
    is_custom = models.BooleanField(default=True)
    accepts_messages = models.BooleanField(default=True)
    accepts_documents = models.BooleanField(default=True)
    number_prefix = models.CharField(
        max_length=8,
        unique=True,
        validators=[RegexValidator(r"^[A-Z]{1,8}$", "Use 1 to 8 capital letters.")],
    )
    next_number = models.PositiveIntegerField(default=1, editable=False)
    default_sharing = models.CharField(
        max_length=32, choices=Sharing.choices, default=Sharing.PUBLIC_READ_WRITE_DELETE
    )
    position = models.PositiveIntegerField(default=100)
    icon = models.CharField(max_length=8, blank=True, help_text="An emoji shown beside the name.")

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.plural


class FieldType(models.TextChoices):
    TEXT = "text", "Text"
    TEXTAREA = "textarea", "Long text"
    EMAIL = "email", "Email"
    PHONE = "phone", "Phone"
    URL = "url", "Web address"
    NUMBER = "number", "Number"
    DATE = "date", "Date"
    DATETIME = "datetime", "Date and time"
    PICKLIST = "picklist", "Picklist"
    REFERENCE = "reference", "Reference to a record"
    BOOLEAN = "boolean", "Yes / no"


class Field(models.Model):
    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="fields")
    name = models.CharField(max_length=63, validators=[identifier])
    label = models.CharField(max_length=100)
    type = models.CharField(max_length=16, choices=FieldType.choices, default=FieldType.TEXT)
    required = models.BooleanField(default=False)
    is_label = models.BooleanField(
        default=False, help_text="Part of the record's label (its name in lists and links)."
    )
    position = models.PositiveIntegerField(default=100)
    choices = models.JSONField(
        default=list, blank=True, help_text="Picklist values, in order (picklists only)."
    )
    reference_module = models.ForeignKey(
        Module,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="References only: the module referred to; empty means any module.",
    )
    is_custom = models.BooleanField(default=True)

    class Meta:
        ordering = ["module", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["module", "name"], name="field_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.module.name}.{self.name}"
