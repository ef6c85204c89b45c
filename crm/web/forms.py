"""A record form built from the fields a user may see; read-only fields are shown disabled."""

from __future__ import annotations

from typing import Any

from django import forms

from crm import access
from crm.models import Group, Module, Record, User
from crm.models.modules import FieldType
from crm.selectors import records as record_selectors

_WIDGETS: dict[str, type[forms.Field]] = {
    FieldType.TEXT: forms.CharField,
    FieldType.TEXTAREA: forms.CharField,
    FieldType.EMAIL: forms.CharField,
    FieldType.PHONE: forms.CharField,
    FieldType.URL: forms.CharField,
    FieldType.NUMBER: forms.CharField,
    FieldType.DATE: forms.CharField,
    FieldType.DATETIME: forms.CharField,
    FieldType.PICKLIST: forms.ChoiceField,
    FieldType.REFERENCE: forms.ChoiceField,
    FieldType.BOOLEAN: forms.BooleanField,
}
_INPUT_TYPES: dict[str, str] = {
    FieldType.EMAIL: "email",
    FieldType.PHONE: "tel",
    FieldType.URL: "url",
    FieldType.DATE: "date",
    FieldType.DATETIME: "datetime-local",
    FieldType.NUMBER: "text",
}


class RecordForm(forms.Form):
    """Parses the page's input only; the records service validates and decides."""

    def __init__(self, user: User, module: Module, record: Record | None = None, **kw: Any):
        super().__init__(**kw)
        self.record = record
        self.access = access.visible_fields(user, module)
        data = record.data if record else {}
        for fa in self.access:
            self.fields[fa.field.name] = self._field(user, fa, data.get(fa.field.name))
        users, groups = record_selectors.owner_choices()
        user_choices = [(f"u:{u.pk}", str(u)) for u in users]
        owner_user = record.owner_user if record else None
        if owner_user is not None and not owner_user.is_active:
            # Records outlive their owner's account. Without his own option the browser would
            # submit the first user listed, and saving would silently hand the record to him.
            user_choices.append((f"u:{owner_user.pk}", f"{owner_user} (inactive)"))
        self.fields["owner"] = forms.ChoiceField(
            label="Owner",
            choices=[
                ("Users", user_choices),
                ("Groups", [(f"g:{g.pk}", g.name) for g in groups]),
            ],
            initial=_owner_key(record) if record else f"u:{user.pk}",
        )

    def _field(self, user: User, fa: access.FieldAccess, value: Any) -> forms.Field:
        f = fa.field
        kind = _WIDGETS[FieldType(f.type)]
        opts: dict[str, Any] = {"label": f.label, "required": False, "disabled": fa.read_only}
        if f.type == FieldType.TEXTAREA:
            opts["widget"] = forms.Textarea(attrs={"rows": 4})
        elif f.type in _INPUT_TYPES:
            opts["widget"] = forms.TextInput(attrs={"type": _INPUT_TYPES[f.type]})
        if f.type == FieldType.PICKLIST:
            opts["choices"] = [("", "—")] + [(c, c) for c in f.choices or []]
        if f.type == FieldType.REFERENCE:
            targets = record_selectors.reference_choices(user, f.reference_module)
            opts["choices"] = [("", "—")] + [(str(r.pk), f"{r.number} {r.label}") for r in targets]
            if value and str(value) not in {c[0] for c in opts["choices"]}:
                opts["choices"].append((str(value), f"record {value}"))
        field = kind(**opts)
        field.initial = _initial(f.type, value)
        if f.required:
            field.widget.attrs["required"] = "required"
            field.label_suffix = " *"
        return field

    def values(self) -> dict[str, Any]:
        """The submitted values of the fields the user may change."""
        return {
            fa.field.name: self.cleaned_data.get(fa.field.name)
            for fa in self.access
            if not fa.read_only
        }

    def owner(self) -> User | Group:
        kind, _, pk = self.cleaned_data["owner"].partition(":")
        model = Group if kind == "g" else User
        return model.objects.get(pk=int(pk))


def _initial(field_type: str, value: Any) -> Any:
    if field_type == FieldType.DATETIME and value:
        return str(value)[:16]
    return value


def _owner_key(record: Record) -> str:
    return f"u:{record.owner_user_id}" if record.owner_user_id else f"g:{record.owner_group_id}"
