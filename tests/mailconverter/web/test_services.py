"""The write and preview services behind the settings pages, called directly.

The pages' tests show the results on screen; these pin the services' own contract: only an
administrator, errors naming the field or row, and a preview that leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import User
from mailconverter import services
from mailconverter.models import BlockedSender, Folder, Mailbox, Rule
from mailconverter.services import RuleInput
from tests.conftest import Org
from tests.mailconverter.helpers import mail

pytestmark = pytest.mark.django_db


@pytest.fixture
def mailbox(org: Org) -> Mailbox:
    box = Mailbox(name="support", host="imap.example.com", username="s@crm.test", owner=org.admin)
    box.set_password("pw")
    box.save()
    Folder.objects.create(mailbox=box, name="INBOX")
    Folder.objects.create(mailbox=box, name="Junk", special_use="\\Junk")
    return box


def _rule(**changes: Any) -> RuleInput:
    values: dict[str, Any] = {
        "name": "tickets",
        "enabled": True,
        "match": "all",
        "conditions": [],
        "actions": [{"type": "create_ticket"}],
        "stop_after_match": True,
    }
    values.update(changes)
    return RuleInput(**values)


@pytest.mark.parametrize("who", ["alice", "bob", "charlie"])
def test_only_an_administrator_may_call_them(org: Org, mailbox: Mailbox, who: str) -> None:
    actor: User = getattr(org, who)
    rule = Rule.objects.create(mailbox=mailbox, actions=[{"type": "nothing"}])
    blocked = BlockedSender.objects.create(
        mailbox=mailbox, address="x@y.example", created_at=timezone.now()
    )
    calls = [
        lambda: services.select_folders(actor=actor, mailbox=mailbox, names=["INBOX"]),
        lambda: services.save_rule(actor=actor, mailbox=mailbox, rule=None, data=_rule()),
        lambda: services.move_rule(actor=actor, rule=rule, direction="up"),
        lambda: services.delete_rule(actor=actor, rule=rule),
        lambda: services.block_sender(actor=actor, mailbox=mailbox, address="a@b.example"),
        lambda: services.unblock_sender(actor=actor, blocked=blocked),
        lambda: services.preview_rules(
            actor=actor, mailbox=mailbox, raw=mail("customer_question.eml")
        ),
    ]
    for call in calls:
        with pytest.raises(Forbidden):
            call()
    assert Rule.objects.count() == 1
    assert BlockedSender.objects.count() == 1
    assert not Folder.objects.filter(selected=True).exists()


def test_junk_and_unknown_folders_are_refused_naming_the_field(org: Org, mailbox: Mailbox) -> None:
    with pytest.raises(Invalid) as junk:
        services.select_folders(actor=org.admin, mailbox=mailbox, names=["INBOX", "Junk"])
    assert junk.value.fields == {"folders": "Junk is never scanned (trash, drafts, junk)."}
    with pytest.raises(Invalid) as unknown:
        services.select_folders(actor=org.admin, mailbox=mailbox, names=["Nope"])
    assert unknown.value.fields == {"folders": "The server does not list Nope."}
    assert not Folder.objects.filter(selected=True).exists()


def test_rule_errors_name_each_row(org: Org, mailbox: Mailbox) -> None:
    bad = _rule(
        conditions=[
            {"field": "subject", "operator": "contains", "value": "ok"},
            {"field": "colour", "operator": "contains", "value": "red"},
        ],
        actions=[{"type": "create_ticket"}, {"type": "link", "module": "Tickets"}],
        match="most",
    )
    with pytest.raises(Invalid) as refused:
        services.save_rule(actor=org.admin, mailbox=mailbox, rule=None, data=bad)
    assert refused.value.fields == {
        "conditions.1": "Choose a field and an operator.",
        "actions.1": "Link to one of Contacts, Companies, Leads.",
        "match": "Choose all or any.",
    }
    assert not Rule.objects.exists()


def test_new_rules_go_last(org: Org, mailbox: Mailbox) -> None:
    first = services.save_rule(actor=org.admin, mailbox=mailbox, rule=None, data=_rule(name="a"))
    second = services.save_rule(actor=org.admin, mailbox=mailbox, rule=None, data=_rule(name="b"))
    assert (first.position, second.position) == (0, 1)


def test_a_rule_of_another_mailbox_cannot_be_saved_through_this_one(
    org: Org, mailbox: Mailbox
) -> None:
    other = Mailbox.objects.create(
        name="sales", host="imap.example.com", username="x@crm.test", owner=org.admin
    )
    foreign = Rule.objects.create(mailbox=other, actions=[{"type": "nothing"}])
    with pytest.raises(NotFound):
        services.save_rule(actor=org.admin, mailbox=mailbox, rule=foreign, data=_rule())


def test_the_preview_writes_nothing_to_the_database(org: Org, mailbox: Mailbox) -> None:
    Rule.objects.create(
        mailbox=mailbox, name="all", actions=[{"type": "link_or_create", "module": "Leads"}]
    )
    with CaptureQueriesContext(connection) as queries:
        preview = services.preview_rules(
            actor=org.admin, mailbox=mailbox, raw=mail("customer_question.eml")
        )
    assert preview.verdict == (
        "all would apply: create a Lead for anna.rossi@acme.example then link."
    )
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}
    ]
    assert writes == []


def test_blocking_normalises_the_address_and_refuses_a_non_address(
    org: Org, mailbox: Mailbox
) -> None:
    blocked = services.block_sender(actor=org.admin, mailbox=mailbox, address=" Bob@SHOP.example ")
    assert blocked.address == "bob@shop.example"
    again = services.block_sender(actor=org.admin, mailbox=mailbox, address="bob@shop.example")
    assert again.pk == blocked.pk
    with pytest.raises(Invalid) as refused:
        services.block_sender(actor=org.admin, mailbox=mailbox, address="bob")
    assert refused.value.fields == {"address": "Enter an email address."}


def test_an_action_may_only_set_a_status_or_priority_tickets_have(
    org: Org, mailbox: Mailbox
) -> None:
    assert "Wait for response" in services.ticket_choices()["status"]
    bad = _rule(actions=[{"type": "update_ticket", "status": "Sleeping"}])
    with pytest.raises(Invalid) as refused:
        services.save_rule(actor=org.admin, mailbox=mailbox, rule=None, data=bad)
    assert refused.value.fields == {"actions.0": "Tickets have no status “Sleeping”."}
    good = _rule(actions=[{"type": "update_ticket", "status": "Wait for response"}])
    saved = services.save_rule(actor=org.admin, mailbox=mailbox, rule=None, data=good)
    assert saved.actions == [{"type": "update_ticket", "status": "Wait for response"}]
