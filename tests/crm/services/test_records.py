"""Writing records: numbers, validation, the address index, the change log, the recycle bin."""

from __future__ import annotations

import pytest

from crm import access
from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import ChangeLog, Comment, Field, Module, Record, RecordAddress
from crm.models.modules import Sharing
from crm.services import records as record_service
from tests.conftest import Org
from tests.factories import GroupFactory, grant, make_record

pytestmark = pytest.mark.django_db


def _contacts() -> Module:
    return Module.objects.get(name="Contacts")


def test_records_are_numbered_per_module_with_its_prefix(org: Org) -> None:
    first = record_service.create(actor=org.alice, module=_contacts(), data={"last_name": "A"})
    second = record_service.create(actor=org.alice, module=_contacts(), data={"last_name": "B"})
    ticket = record_service.create(
        actor=org.alice,
        module=Module.objects.get(name="Tickets"),
        data={"title": "Printer on fire", "status": "Open"},
    )
    assert (first.number, second.number) == ("CON1", "CON2")
    assert ticket.number == "TT1"


def test_the_label_is_made_of_the_label_fields(org: Org) -> None:
    record = record_service.create(
        actor=org.alice, module=_contacts(), data={"first_name": "Ada", "last_name": "Lovelace"}
    )
    assert record.label == "Ada Lovelace"
    assert record.owner_user == org.alice
    assert record.created_by == org.alice


def test_each_bad_value_is_refused_naming_its_field(org: Org) -> None:
    opportunity = Module.objects.get(name="Opportunities")
    with pytest.raises(Invalid) as caught:
        record_service.create(
            actor=org.alice,
            module=opportunity,
            data={
                "amount": "lots",
                "stage": "Dreaming",
                "close_date": "31/12/2026",
                "colour": "red",
            },
        )
    assert set(caught.value.fields) == {"name", "amount", "stage", "close_date", "colour"}
    assert Record.objects.count() == 0


def test_values_are_normalised(org: Org) -> None:
    record = record_service.create(
        actor=org.alice,
        module=Module.objects.get(name="Opportunities"),
        data={
            "name": "Big deal",
            "stage": "Proposal",
            "amount": "12,500.50",
            "close_date": "2026-12-31",
        },
    )
    assert record.data == {
        "name": "Big deal",
        "stage": "Proposal",
        "amount": "12500.5",
        "close_date": "2026-12-31",
    }


def test_an_email_field_refuses_a_non_address(org: Org) -> None:
    with pytest.raises(Invalid) as caught:
        record_service.create(
            actor=org.alice, module=_contacts(), data={"last_name": "X", "email": "not-an-address"}
        )
    assert "email" in caught.value.fields


def test_a_reference_must_point_to_a_visible_record_of_the_right_module(org: Org) -> None:
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PRIVATE
    companies.save()
    charlies_company = make_record(companies, org.charlie, name="Hidden Ltd")
    alices_company = make_record(companies, org.alice, name="Mine Ltd")
    a_contact = make_record(_contacts(), org.alice, last_name="Not a company")
    deleted = make_record(companies, org.alice, name="Gone Ltd")
    record_service.delete(actor=org.alice, record=deleted)
    for target in (charlies_company, a_contact, deleted):
        with pytest.raises(Invalid) as caught:
            record_service.create(
                actor=org.alice, module=_contacts(), data={"last_name": "Y", "company": target.pk}
            )
        assert caught.value.fields == {"company": "No such record."}
    ok = record_service.create(
        actor=org.alice, module=_contacts(), data={"last_name": "Y", "company": alices_company.pk}
    )
    assert ok.data["company"] == alices_company.pk


def test_the_address_index_follows_every_save(org: Org) -> None:
    record = record_service.create(
        actor=org.alice,
        module=_contacts(),
        data={"last_name": "Doe", "email": "Jane.Doe@ACME.example", "secondary_email": "j@x.org"},
    )
    assert set(RecordAddress.objects.values_list("address", "domain")) == {
        ("jane.doe@acme.example", "acme.example"),
        ("j@x.org", "x.org"),
    }
    record_service.update(
        actor=org.alice, record=record, data={"email": "jane@new.example", "secondary_email": ""}
    )
    assert list(RecordAddress.objects.values_list("address", flat=True)) == ["jane@new.example"]


def test_updates_are_logged_field_by_field(org: Org) -> None:
    record = record_service.create(
        actor=org.alice, module=_contacts(), data={"last_name": "Doe", "job_title": "Buyer"}
    )
    record_service.update(
        actor=org.bob, record=record, data={"job_title": "Head buyer", "phone": "+44 20 7946 0000"}
    )
    entry = ChangeLog.objects.filter(record=record, action="update").get()
    assert entry.actor == org.bob
    assert entry.changes == {
        "job_title": ["Buyer", "Head buyer"],
        "phone": [None, "+44 20 7946 0000"],
    }
    created = ChangeLog.objects.get(record=record, action="create")
    assert created.changes["last_name"] == [None, "Doe"]


def test_saving_without_changes_writes_no_history(org: Org) -> None:
    record = make_record(_contacts(), org.alice, last_name="Doe")
    record_service.update(actor=org.alice, record=record, data={"last_name": "Doe"})
    assert not ChangeLog.objects.filter(record=record, action="update").exists()


def test_clearing_a_required_field_is_refused(org: Org) -> None:
    record = make_record(_contacts(), org.alice, last_name="Doe")
    with pytest.raises(Invalid) as caught:
        record_service.update(actor=org.alice, record=record, data={"last_name": ""})
    assert "last_name" in caught.value.fields


def test_editing_an_invisible_record_is_not_found_and_a_read_only_one_forbidden(org: Org) -> None:
    contacts = _contacts()
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    companies = Module.objects.get(name="Companies")
    companies.default_sharing = Sharing.PUBLIC_READ
    companies.save()
    hidden = make_record(contacts, org.charlie, last_name="Secret")
    readable = make_record(companies, org.charlie, name="Readable")
    with pytest.raises(NotFound):
        record_service.update(actor=org.alice, record=hidden, data={"last_name": "Mine now"})
    with pytest.raises(Forbidden):
        record_service.update(actor=org.alice, record=readable, data={"name": "Mine now"})
    with pytest.raises(NotFound):
        record_service.delete(actor=org.alice, record=hidden)
    hidden.refresh_from_db()
    assert hidden.data["last_name"] == "Secret"


def test_creating_in_a_module_without_create_permission_is_forbidden(org: Org) -> None:
    grant(org.standard, "Contacts", "view edit")
    with pytest.raises(Forbidden):
        record_service.create(actor=org.alice, module=_contacts(), data={"last_name": "X"})


def test_the_recycle_bin_keeps_a_deleted_record_until_restored(org: Org) -> None:
    record = make_record(_contacts(), org.alice, last_name="Doe")
    record_service.delete(actor=org.alice, record=record)
    record.refresh_from_db()
    assert record.deleted_by == org.alice
    assert not access.records(org.alice, record.module).exists()
    record_service.restore(actor=org.alice, record=record)
    record.refresh_from_db()
    assert access.records(org.alice, record.module).get() == record
    actions = list(ChangeLog.objects.filter(record=record).values_list("action", flat=True))
    assert sorted(actions) == ["create", "delete", "restore"]


def test_only_an_administrator_purges_and_the_trail_survives(org: Org) -> None:
    record = make_record(_contacts(), org.alice, last_name="Doe")
    number = record.number
    with pytest.raises(Invalid):
        record_service.purge(actor=org.admin, record=record)  # not in the bin yet
    record_service.delete(actor=org.alice, record=record)
    with pytest.raises(Forbidden):
        record_service.purge(actor=org.alice, record=record)
    record_service.purge(actor=org.admin, record=record)
    assert not Record.objects.filter(number=number).exists()
    trail = ChangeLog.objects.filter(record_number=number).values_list("action", flat=True)
    assert sorted(trail) == ["create", "delete", "purge"]


def test_a_record_can_be_given_to_a_group_and_back(org: Org) -> None:
    team = GroupFactory()
    record = make_record(_contacts(), org.alice, last_name="Doe")
    record_service.update(actor=org.alice, record=record, data={}, owner=team)
    record.refresh_from_db()
    assert (record.owner_user, record.owner_group) == (None, team)
    entry = ChangeLog.objects.get(record=record, action="update")
    assert entry.changes["owner"] == [str(org.alice), team.name]


def test_a_comment_needs_a_body_and_is_logged(org: Org) -> None:
    record = make_record(_contacts(), org.alice, last_name="Doe")
    with pytest.raises(Invalid):
        record_service.add_comment(actor=org.alice, record=record, body="   ")
    record_service.add_comment(actor=org.bob, record=record, body="Called, no answer.")
    comment = Comment.objects.get(record=record)
    assert (comment.author, comment.body, comment.via_mail) == (
        org.bob,
        "Called, no answer.",
        False,
    )


def test_a_custom_module_behaves_like_a_built_in_one(org: Org) -> None:
    projects = Module.objects.create(
        name="Projects", singular="Project", plural="Projects", number_prefix="PRJ"
    )
    Field.objects.create(module=projects, name="name", label="Name", required=True, is_label=True)
    Field.objects.create(module=projects, name="contact_email", label="Contact", type="email")
    grant(org.standard, projects)
    projects.default_sharing = Sharing.PRIVATE
    projects.save()
    record = record_service.create(
        actor=org.alice,
        module=projects,
        data={"name": "Rollout", "contact_email": "pm@acme.example"},
    )
    assert record.number == "PRJ1"
    assert record.label == "Rollout"
    assert RecordAddress.objects.get(record=record).domain == "acme.example"
    assert access.can(org.bob, "edit", record)
    assert not access.can(org.charlie, "view", record)
    assert projects in access.visible_modules(org.alice)


def test_the_reference_index_follows_every_save(org: Org) -> None:
    from crm.models import RecordReference

    acme = make_record("Companies", org.alice, name="Acme")
    other = make_record("Companies", org.alice, name="Other")
    jane = record_service.create(
        actor=org.alice, module=_contacts(), data={"last_name": "Doe", "company": acme.pk}
    )
    assert list(RecordReference.objects.values_list("record", "target")) == [(jane.pk, acme.pk)]
    record_service.update(actor=org.alice, record=jane, data={"company": other.pk})
    assert list(RecordReference.objects.values_list("target", flat=True)) == [other.pk]
    record_service.update(actor=org.alice, record=jane, data={"company": None})
    assert not RecordReference.objects.exists()


def test_the_address_index_follows_an_email_change_and_stays_through_other_changes(
    org: Org,
) -> None:
    jane = record_service.create(
        actor=org.alice, module=_contacts(), data={"last_name": "Doe", "email": "jane@acme.example"}
    )
    jane = record_service.update(actor=org.alice, record=jane, data={"first_name": "Jane"})

    def indexed() -> list[str]:
        return list(RecordAddress.objects.filter(record=jane).values_list("address", flat=True))

    assert indexed() == ["jane@acme.example"]
    record_service.update(actor=org.alice, record=jane, data={"email": "Jane@Other.example"})
    assert indexed() == ["jane@other.example"]


def test_within_remembering_a_new_field_counts_once_the_memo_is_emptied(org: Org) -> None:
    memo: dict[str, object] = {}
    with record_service.remembering(memo):
        record_service.create(actor=org.alice, module=_contacts(), data={"last_name": "First"})
        Field.objects.create(module=_contacts(), name="nickname", label="Nickname")
        with pytest.raises(Invalid) as caught:
            record_service.create(
                actor=org.alice, module=_contacts(), data={"last_name": "B", "nickname": "Bee"}
            )
        assert caught.value.fields == {"nickname": "No such field."}
        memo.clear()
        bee = record_service.create(
            actor=org.alice, module=_contacts(), data={"last_name": "B", "nickname": "Bee"}
        )
    assert Record.objects.get(pk=bee.pk).data["nickname"] == "Bee"
    # Outside the block nothing is remembered.
    Field.objects.create(module=_contacts(), name="pet", label="Pet")
    pet = record_service.create(
        actor=org.alice, module=_contacts(), data={"last_name": "C", "pet": "Rex"}
    )
    assert pet.data["pet"] == "Rex"
