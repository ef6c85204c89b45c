"""Email templates: merge fields filled from what the sending user sees on the record, and
nothing else (crm.services.mail_templates)."""

from __future__ import annotations

import pytest

from crm.exceptions import NotFound
from crm.models import EmailTemplate, FieldPermission, Module, Record
from crm.models.modules import Sharing
from crm.services import mail_templates
from tests.conftest import Org
from tests.factories import make_record

pytestmark = pytest.mark.django_db


def _template(subject: str, body: str, module: str | None = None) -> EmailTemplate:
    return EmailTemplate.objects.create(
        name=f"T{EmailTemplate.objects.count() + 1}",
        subject=subject,
        body_html=body,
        module=Module.objects.get(name=module) if module else None,
    )


def _jane(org: Org, **data: str) -> Record:
    acme = make_record("Companies", org.alice, name="Acme Ltd")
    return make_record(
        "Contacts",
        org.alice,
        first_name="Jane",
        last_name="Doe",
        email="jane@customer.example",
        mobile="+1 555 0100",
        company=str(acme.pk),
        **data,
    )


def test_merge_fields_come_from_the_record_its_references_and_the_sending_user(org: Org) -> None:
    org.alice.first_name = "Alice"
    jane = _jane(org)
    ticket = make_record(
        "Tickets", org.alice, title="Printer jams", status="Open", contact=str(jane.pk)
    )
    template = _template(
        "Re: {{ record.title }} [{{ record.number }}]",
        "<p>Dear {{ contact.first_name }} {{contact.last_name}} of {{ company.name }},</p>"
        "<p>about {{ ticket.title }}.</p><p>{{ user.first_name }}</p>",
    )

    subject, body, warnings = mail_templates.render(
        actor=org.alice, template=template, record=ticket
    )

    assert subject == f"Re: Printer jams [{ticket.number}]"
    # The ticket has no company of its own: {{ company.name }} is unknown there.
    assert "Dear Jane Doe of {{ company.name }}," in body
    assert "<p>about Printer jams.</p><p>Alice</p>" in body
    assert warnings == [
        "{{ company.name }} is not a field you can see on this record: it was left as typed. "
        "Replace it before sending."
    ]
    # A reference gives the name of the record referred to.
    named = _template("{{ record.contact }} / {{ contact.company }}", "")
    assert mail_templates.render(actor=org.alice, template=named, record=ticket)[0] == (
        "Jane Doe / Acme Ltd"
    )
    # On the contact itself, its company is reachable through the contact's reference.
    _, body, warnings = mail_templates.render(actor=org.alice, template=template, record=jane)
    assert "Dear Jane Doe of Acme Ltd," in body
    assert warnings == [
        "{{ record.title }} is not a field you can see on this record: it was "
        "left as typed. Replace it before sending.",
        "{{ ticket.title }} is not a field you can see on this record: it was "
        "left as typed. Replace it before sending.",
    ]


def test_a_field_hidden_from_the_user_is_never_rendered_and_looks_like_an_unknown_one(
    org: Org,
) -> None:
    jane = _jane(org)
    mobile = Module.objects.get(name="Contacts").fields.get(name="mobile")
    FieldPermission.objects.create(profile=org.standard, field=mobile, visible=False)
    template = _template(
        "Call {{ contact.mobile }}", "<p>{{ record.mobile }} {{ contact.fax }}</p>"
    )

    subject, body, warnings = mail_templates.render(actor=org.alice, template=template, record=jane)

    assert "555" not in subject + body
    assert subject == "Call {{ contact.mobile }}"
    assert body == "<p>{{ record.mobile }} {{ contact.fax }}</p>"
    hidden = next(w for w in warnings if "contact.mobile" in w)
    unknown = next(w for w in warnings if "contact.fax" in w)
    assert hidden.replace("contact.mobile", "X") == unknown.replace("contact.fax", "X")
    # The administrator sees the field, so the same template fills it in for him.
    subject, _, _ = mail_templates.render(actor=org.admin, template=template, record=jane)
    assert subject == "Call +1 555 0100"


def test_a_referenced_record_the_user_cannot_see_gives_no_values(org: Org) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    secret = make_record("Contacts", org.charlie, first_name="Rick", last_name="Roe")
    ticket = make_record("Tickets", org.alice, title="Jam", status="Open", contact=str(secret.pk))
    template = _template("Hi {{ contact.first_name }}", "<p>{{ record.contact }}</p>")

    subject, body, _ = mail_templates.render(actor=org.alice, template=template, record=ticket)

    assert "Rick" not in subject + body
    assert "Roe" not in body
    assert subject == "Hi {{ contact.first_name }}"


def test_values_are_escaped_in_the_body_and_kept_on_one_line_in_the_subject(org: Org) -> None:
    jane = _jane(org, job_title='<img src=x onerror="alert(1)"> & <b>Partners</b>')
    template = _template("{{ contact.job_title }}", "<p>{{ contact.job_title }}</p>")

    subject, body, _ = mail_templates.render(actor=org.alice, template=template, record=jane)

    assert "<img" not in body
    assert "<b>" not in body
    assert "&lt;img src=x onerror=" in body
    assert "&amp; &lt;b&gt;Partners&lt;/b&gt;" in body
    assert subject == '<img src=x onerror="alert(1)"> & <b>Partners</b>'


def test_the_template_itself_is_not_a_django_template(org: Org) -> None:
    jane = _jane(org)
    template = _template(
        "{{ user.password }}{% now 'Y' %}",
        "<p>{{ settings.SECRET_KEY }}{{ record.__class__ }}{% debug %}</p><script>x()</script>",
    )

    subject, body, warnings = mail_templates.render(actor=org.alice, template=template, record=jane)

    assert subject == "{{ user.password }}{% now 'Y' %}"
    assert "{{ settings.SECRET_KEY }}{{ record.__class__ }}{% debug %}" in body
    assert "<script>" not in body  # the body is also cleaned like any email HTML
    assert len(warnings) == 3


def test_an_empty_field_renders_empty_with_a_warning(org: Org) -> None:
    jane = make_record("Contacts", org.alice, last_name="Doe")
    template = _template("", "<p>Dear {{ contact.first_name }} {{ contact.last_name }}</p>")

    _, body, warnings = mail_templates.render(actor=org.alice, template=template, record=jane)

    assert body == "<p>Dear  Doe</p>"
    assert warnings == ["{{ contact.first_name }} is empty on this record."]


def test_templates_offered_are_the_general_ones_and_those_of_the_records_module(org: Org) -> None:
    general = _template("", "")
    for_contacts = _template("", "", module="Contacts")
    _template("", "", module="Tickets")
    EmailTemplate.objects.create(name="Retired", is_active=False)
    jane = _jane(org)

    offered = set(mail_templates.templates_for(actor=org.alice, record=jane))

    assert offered == {general, for_contacts}
    with pytest.raises(NotFound):
        mail_templates.template_for(
            actor=org.alice, record=jane, template_id=EmailTemplate.objects.get(name="T3").pk
        )
