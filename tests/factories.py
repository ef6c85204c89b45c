"""factory_boy factories for the CRM's people and records (never the demo data)."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import factory
from django.contrib.auth.hashers import make_password

from crm.models import Group, Module, ModulePermission, Profile, Record, Role, User
from crm.services import access_admin
from crm.services import records as record_service

PASSWORD = "correct horse battery staple"
# Hashing once keeps the suite fast; every factory user shares this password.
_HASHED = make_password(PASSWORD)


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Role

    name = factory.Sequence(lambda n: f"Role {n}")
    parent = None

    @classmethod
    def _create(cls, model_class: type[Role], *args: Any, **kwargs: Any) -> Role:
        return access_admin.save_role(role=model_class(**kwargs))


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    name = factory.Sequence(lambda n: f"Profile {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@crm.test")
    password = _HASHED
    role = None


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group

    name = factory.Sequence(lambda n: f"Group {n}")


def grant(profile: Profile, module: Module | str, actions: str = "view create edit delete") -> None:
    if isinstance(module, str):
        module = Module.objects.get(name=module)
    wanted = set(actions.split())
    ModulePermission.objects.update_or_create(
        profile=profile,
        module=module,
        defaults=ModulePermission.flags(wanted) | {"visible": True},
    )


def grant_all(profile: Profile, actions: str = "view create edit delete") -> None:
    for module in Module.objects.all():
        grant(profile, module, actions)


def make_record(module: Module | str, owner: User | Group, **data: Any) -> Record:
    """A record created through the records service, on behalf of an administrator."""
    if isinstance(module, str):
        module = Module.objects.get(name=module)
    system, _ = User.objects.get_or_create(
        username="system-factory", defaults={"is_superuser": True, "is_staff": True}
    )
    if not data:
        data = _minimal(module)
    return record_service.create(actor=system, module=module, data=data, owner=owner)


def _minimal(module: Module) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in module.fields.filter(required=True):
        if f.type == "picklist":
            data[f.name] = f.choices[0]
        elif f.type == "datetime":
            data[f.name] = "2026-11-23T10:00:00+00:00"
        else:
            data[f.name] = f"{f.label} {Record.objects.count() + 1}"
    return data


def make_eml(message_id: str, *, subject: str = "Order", files: int = 2) -> bytes:
    """A customer's email to alice@crm.example with `files` small PDF attachments (distinct)."""
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.example>"
    msg["To"] = "alice@crm.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content("Please find the order attached.")
    for n in range(files):
        msg.add_attachment(
            f"%PDF order {n}".encode(),
            maintype="application",
            subtype="pdf",
            filename=f"order-{n}.pdf",
        )
    return bytes(msg)
