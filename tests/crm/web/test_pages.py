"""The CRM's own pages, seen through the Django test client by the personas of tests/conftest.py.

Assertions read the HTML the way a user sees it: links, rows, buttons, disabled inputs, messages.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from lxml import html as lxml_html
from lxml.html import HtmlElement

from crm.models import Field, FieldPermission, Module, Record, User
from crm.models.modules import Sharing
from crm.version import CRM_VERSION
from tests.conftest import Org
from tests.factories import PASSWORD, ProfileFactory, UserFactory, grant, make_record

HX = {"HTTP_HX_REQUEST": "true"}
CURRENT_TAB = "//nav[@class='tab-nav']//a[@aria-current='true']"

# --- helpers ---------------------------------------------------------------------------------


def _doc(response: Any) -> HtmlElement:
    return lxml_html.fromstring(response.content.decode())


def _text(response: Any) -> str:
    """The page's visible text, whitespace collapsed."""
    return " ".join(_doc(response).text_content().split())


def _sharing(module_name: str, level: str) -> Module:
    module = Module.objects.get(name=module_name)
    module.default_sharing = level
    module.save()  # through save(), so that cached privileges are retired
    return module


def _detail(record: Record) -> str:
    return reverse("crm:record_detail", args=[record.module.name, record.pk])


def _edit(record: Record) -> str:
    return reverse("crm:record_edit", args=[record.module.name, record.pk])


def _tab(record: Record, tab: str) -> str:
    return reverse("crm:record_tab", args=[record.module.name, record.pk, tab])


def _list(module_name: str) -> str:
    return reverse("crm:record_list", args=[module_name])


def _row_labels(response: Any) -> list[str]:
    return [a.text_content().strip() for a in _doc(response).xpath("//td[@class='label']/a")]


def _form_values(response: Any) -> dict[str, str]:
    """What the browser would submit from the page's record form (disabled fields left out)."""
    form = _doc(response).xpath("//form[contains(@class, 'record-form')]")[0]
    return dict(form.form_values())


def _field_hidden(org: Org, module: str, name: str, *, visible: bool, read_only: bool) -> None:
    FieldPermission.objects.create(
        profile=org.standard,
        field=Field.objects.get(module__name=module, name=name),
        visible=visible,
        read_only=read_only,
    )


def _without_csrf(response: Any) -> str:
    # The logout form's token is masked afresh on every render; nothing else may differ.
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())


# --- logging in --------------------------------------------------------------------------------


def test_the_login_page_logs_a_user_in_and_names_him_in_the_top_bar(client: Client, org: Org):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    doc = _doc(page)
    assert doc.xpath("//label[@for='id_username']")
    assert doc.xpath("//label[@for='id_password']")

    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": "/"}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("crm:home")
    assert str(org.alice) in _doc(response).xpath("//span[@class='account-name']")[0].text
    assert _doc(response).xpath("//form[@action='/logout/']//button[@type='submit']")


def test_a_wrong_password_shows_an_error_and_logs_nobody_in(client: Client, org: Org):
    response = client.post(reverse("login"), {"username": "alice", "password": "not it"})

    assert response.status_code == 200
    alert = _doc(response).xpath("//*[@role='alert']")[0].text_content()
    assert "Please enter a correct username and password" in alert
    assert client.get(reverse("crm:home")).status_code == 302


@pytest.mark.parametrize(
    "url",
    ["/", "/recycle-bin/", "/m/Contacts/", "/m/Contacts/new/", "/m/Contacts/1/"],
)
def test_pages_send_a_visitor_who_is_not_logged_in_to_the_login_page(
    client: Client, org: Org, url: str
):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_logging_out_is_a_post_and_ends_the_session(client: Client, org: Org):
    client.force_login(org.alice)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert client.get(reverse("crm:home")).status_code == 302


# --- home and menu -----------------------------------------------------------------------------


def test_home_and_menu_list_only_the_modules_the_users_profile_grants(client: Client, org: Org):
    desk = ProfileFactory(name="Sales desk")
    grant(desk, "Contacts")
    grant(desk, "Companies")
    org.sales_rep.profiles.set([desk])
    client.force_login(org.alice)

    page = client.get(reverse("crm:home"))

    doc = _doc(page)
    cards = {a.get("href") for a in doc.xpath("//a[@class='module-card']")}
    menu = {a.get("href") for a in doc.xpath("//nav[@class='sidenav']//a")}
    assert cards == {_list("Companies"), _list("Contacts")}
    assert menu == {reverse("crm:home"), _list("Companies"), _list("Contacts"), "/recycle-bin/"}
    assert client.get(_list("Tickets")).status_code == 404


def test_home_lists_the_records_the_user_changed_recently(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)
    client.post(_edit(record), {"last_name": "Lovelace-King", "owner": f"u:{org.alice.pk}"})

    page = client.get(reverse("crm:home"))

    recent = _doc(page).xpath("//ul[@class='recent']/li")
    assert len(recent) == 1
    assert "Lovelace-King" in recent[0].text_content()
    assert recent[0].xpath(".//a")[0].get("href") == _detail(record)


def test_the_menu_marks_the_current_module(client: Client, org: Org):
    client.force_login(org.alice)

    page = client.get(_list("Contacts"))

    current = _doc(page).xpath("//nav[@class='sidenav']//a[@aria-current='page']")
    assert [a.get("href") for a in current] == [_list("Contacts")]


# --- the list ----------------------------------------------------------------------------------


def test_the_list_shows_only_the_records_the_user_may_see(client: Client, org: Org):
    _sharing("Contacts", Sharing.PRIVATE)
    make_record("Contacts", org.alice, last_name="Alices customer")
    make_record("Contacts", org.bob, last_name="Bobs customer")
    make_record("Contacts", org.charlie, last_name="Charlies customer")

    client.force_login(org.alice)
    assert _row_labels(client.get(_list("Contacts"))) == ["Alices customer"]

    client.force_login(org.bob)  # her manager sees hers too, not another branch's
    assert sorted(_row_labels(client.get(_list("Contacts")))) == [
        "Alices customer",
        "Bobs customer",
    ]


def test_the_list_shows_the_new_button_only_to_users_who_may_create(client: Client, org: Org):
    client.force_login(org.alice)
    assert "New Contact" in _text(client.get(_list("Contacts")))

    grant(org.standard, "Contacts", "view edit")
    assert "New Contact" not in _text(client.get(_list("Contacts")))


def test_searching_the_list_matches_label_number_or_email_address(client: Client, org: Org):
    ada = make_record("Contacts", org.alice, last_name="Lovelace", email="ada@engines.test")
    make_record("Contacts", org.alice, last_name="Babbage", email="charles@engines.test")
    make_record("Contacts", org.alice, last_name="Hopper", email="grace@navy.test")
    client.force_login(org.alice)

    assert _row_labels(client.get(_list("Contacts"), {"q": "love"})) == ["Lovelace"]
    assert _row_labels(client.get(_list("Contacts"), {"q": ada.number})) == ["Lovelace"]
    assert _row_labels(client.get(_list("Contacts"), {"q": "grace@"})) == ["Hopper"]
    assert "No contacts match “nobody”" in _text(client.get(_list("Contacts"), {"q": "nobody"}))


def test_htmx_search_answers_with_the_table_alone(client: Client, org: Org):
    make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    partial = client.get(_list("Contacts"), {"q": "love"}, **HX)
    full = client.get(_list("Contacts"), {"q": "love"})

    assert "<html" not in partial.content.decode()
    assert _row_labels(partial) == ["Lovelace"]
    assert "<html" in full.content.decode()
    # One URL, two bodies: caches must tell them apart.
    assert "HX-Request" in partial["Vary"]
    assert "HX-Request" in full["Vary"]


def test_the_search_box_is_labelled_and_wired_to_refresh_the_table(client: Client, org: Org):
    client.force_login(org.alice)

    box = _doc(client.get(_list("Contacts"), {"q": "x"})).xpath("//input[@name='q']")[0]

    assert box.get("value") == "x"
    assert _doc(client.get(_list("Contacts"))).xpath(f"//label[@for='{box.get('id')}']")
    assert box.get("hx-get") == _list("Contacts")
    assert box.get("hx-trigger") == "keyup changed delay:300ms, search"
    assert box.get("hx-target") == "#records"
    assert box.get("hx-push-url") == "true"


def test_sorting_the_list_by_label_orders_rows_and_marks_the_column(client: Client, org: Org):
    for name in ("Lovelace", "Babbage", "Hopper"):
        make_record("Contacts", org.alice, last_name=name)
    client.force_login(org.alice)

    ascending = client.get(_list("Contacts"), {"sort": "label"})
    descending = client.get(_list("Contacts"), {"sort": "-label"})

    assert _row_labels(ascending) == ["Babbage", "Hopper", "Lovelace"]
    assert _row_labels(descending) == ["Lovelace", "Hopper", "Babbage"]
    sorted_header = _doc(ascending).xpath("//th[@aria-sort]")
    assert len(sorted_header) == 1
    assert sorted_header[0].get("aria-sort") == "ascending"
    assert sorted_header[0].xpath(".//a")[0].get("href").endswith("sort=-label")
    assert _doc(descending).xpath("//th[@aria-sort]")[0].get("aria-sort") == "descending"


def test_the_list_is_newest_change_first_by_default(client: Client, org: Org):
    for name in ("First", "Second", "Third"):
        make_record("Contacts", org.alice, last_name=name)
    client.force_login(org.alice)

    page = client.get(_list("Contacts"))

    assert _row_labels(page) == ["Third", "Second", "First"]
    assert _doc(page).xpath("//th[@aria-sort]")[0].get("aria-sort") == "descending"


def test_the_list_paginates_and_page_links_keep_search_and_sort(
    client: Client, org: Org, settings: Any
):
    settings.CRM_PAGE_SIZE = 2
    for name in ("Evans", "Jones", "Clark", "Adams", "Davis", "Baker"):
        make_record("Contacts", org.alice, last_name=name)
    client.force_login(org.alice)

    page = client.get(_list("Contacts"), {"q": "a", "sort": "label", "page": "2"})

    # "Jones" has no "a": five match, two a page.
    assert _row_labels(page) == ["Clark", "Davis"]
    assert "5 contacts matching “a”" in _text(page)
    links = _doc(page).xpath("//nav[@class='pagination']//a")
    assert [a.text_content() for a in links] == ["Previous", "1", "2", "3", "Next"]
    for link in links:
        assert "q=a&sort=label&page=" in link.get("href")
    assert _doc(page).xpath("//nav[@class='pagination']//a[@aria-current='page']")[0].text == "2"
    last = client.get(links[-2].get("href"))
    assert _row_labels(last) == ["Evans"]


# --- the record page ---------------------------------------------------------------------------


def test_a_record_the_user_may_not_see_is_not_found_exactly_like_a_missing_one(
    client: Client, org: Org
):
    _sharing("Contacts", Sharing.PRIVATE)
    hidden = make_record("Contacts", org.charlie, last_name="Secret")
    client.force_login(org.alice)

    invisible = client.get(_detail(hidden))
    missing = client.get(reverse("crm:record_detail", args=["Contacts", hidden.pk + 1000]))

    assert invisible.status_code == missing.status_code == 404
    assert _without_csrf(invisible) == _without_csrf(missing)
    assert "Secret" not in invisible.content.decode()
    assert client.get(_tab(hidden, "comments")).status_code == 404
    assert client.get(_edit(hidden)).status_code == 404


def test_the_record_page_shows_its_fields_and_links_a_visible_reference(client: Client, org: Org):
    company = make_record("Companies", org.alice, name="Analytical Engines")
    record = make_record(
        "Contacts", org.alice, last_name="Lovelace", email="ada@engines.test", company=company.pk
    )
    client.force_login(org.alice)

    doc = _doc(client.get(_detail(record)))

    assert record.number in doc.xpath("//h1")[0].text_content()
    rows = {
        row.xpath("./dt")[0].text_content().strip(): row.xpath("./dd")[0]
        for row in doc.xpath("//dl[@class='fields']/div")
    }
    assert rows["Email"].text_content().strip() == "ada@engines.test"
    assert rows["Company"].xpath(".//a")[0].get("href") == _detail(company)
    assert rows["Owner"].text_content().strip() == str(org.alice)


def test_a_reference_to_a_record_the_user_may_not_see_is_not_linked(client: Client, org: Org):
    _sharing("Companies", Sharing.PRIVATE)
    company = make_record("Companies", org.charlie, name="Hidden Holdings")
    record = make_record("Contacts", org.alice, last_name="Lovelace", company=company.pk)
    client.force_login(org.alice)

    page = client.get(_detail(record))

    assert "Hidden Holdings" not in page.content.decode()
    assert "(a record you cannot see)" in _text(page)
    assert _detail(company) not in page.content.decode()


def test_the_record_page_hides_fields_the_profile_hides(client: Client, org: Org):
    _field_hidden(org, "Contacts", "mobile", visible=False, read_only=False)
    record = make_record("Contacts", org.alice, last_name="Lovelace", mobile="+44 20 7946 0321")
    client.force_login(org.alice)

    detail = client.get(_detail(record))
    form = client.get(_edit(record))

    for page in (detail, form):
        assert "Mobile" not in _text(page)
        assert "7946 0321" not in page.content.decode()
    assert not _doc(form).xpath("//*[@name='mobile']")


def test_read_only_fields_are_disabled_in_the_edit_form_and_keep_their_value(
    client: Client, org: Org
):
    _field_hidden(org, "Contacts", "job_title", visible=True, read_only=True)
    record = make_record("Contacts", org.alice, last_name="Lovelace", job_title="Analyst")
    client.force_login(org.alice)

    form_page = client.get(_edit(record))
    field = _doc(form_page).xpath("//input[@name='job_title']")[0]
    assert field.get("disabled") is not None
    assert field.get("value") == "Analyst"
    label = _doc(form_page).xpath(f"//label[@for='{field.get('id')}']")[0]
    assert "read-only" in label.text_content()

    values = _form_values(form_page) | {"job_title": "Chief analyst", "last_name": "King"}
    client.post(_edit(record), values)

    record.refresh_from_db()
    assert record.data["job_title"] == "Analyst"
    assert record.data["last_name"] == "King"


def test_editing_a_record_saves_it_and_the_history_tab_shows_the_change(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace", job_title="Analyst")
    client.force_login(org.alice)

    values = _form_values(client.get(_edit(record))) | {"job_title": "Chief analyst"}
    response = client.post(_edit(record), values, follow=True)

    assert response.redirect_chain[-1][0] == _detail(record)
    assert f"{record.number} saved." in _text(response)
    assert "Chief analyst" in _text(response)
    history = _doc(client.get(_tab(record, "history"), **HX))
    entry = history.xpath("//li[@class='history-entry']")[0]
    assert str(org.alice) in entry.text_content()
    assert "Updated" in entry.text_content()
    change = " ".join(entry.xpath(".//ul[@class='changes']/li")[0].text_content().split())
    assert change == "Job title: Analyst → changed to Chief analyst"


def test_saving_a_record_whose_owner_has_left_keeps_the_owner(client: Client, org: Org):
    leaver = UserFactory(username="leaver", first_name="Lee", last_name="Leaver")
    record = make_record("Contacts", leaver, last_name="Orphan")
    leaver.is_active = False
    leaver.save()
    client.force_login(org.admin)

    form_page = client.get(_edit(record))
    values = _form_values(form_page) | {"job_title": "Buyer"}
    client.post(_edit(record), values)

    assert values["owner"] == f"u:{leaver.pk}"
    record.refresh_from_db()
    assert record.owner_user == leaver
    assert record.data["job_title"] == "Buyer"


def test_a_colleagues_public_read_record_has_no_edit_button_and_refuses_an_edit(
    client: Client, org: Org
):
    _sharing("Contacts", Sharing.PUBLIC_READ)
    record = make_record("Contacts", org.charlie, last_name="Shared")
    client.force_login(org.alice)

    page = client.get(_detail(record))
    assert page.status_code == 200
    assert "Shared" in _text(page)
    assert not _doc(page).xpath(f"//a[@href='{_edit(record)}']")
    assert "Move to recycle bin" not in _text(page)

    response = client.post(_edit(record), {"last_name": "Mine now", "owner": f"u:{org.alice.pk}"})
    assert response.status_code == 403
    assert "Not allowed" in _text(response)
    assert client.get(_edit(record)).status_code == 403
    delete = reverse("crm:record_delete", args=["Contacts", record.pk])
    assert client.post(delete).status_code == 403
    record.refresh_from_db()
    assert record.label == "Shared"
    assert record.deleted_at is None


def test_the_create_form_requires_the_required_fields_and_says_which(client: Client, org: Org):
    client.force_login(org.alice)
    create = reverse("crm:record_create", args=["Contacts"])

    response = client.post(create, {"first_name": "Ada", "owner": f"u:{org.alice.pk}"})

    assert response.status_code == 200
    doc = _doc(response)
    assert doc.xpath("//p[@id='id_last_name_error']")[0].text == "This field is required."
    assert doc.xpath("//input[@name='last_name']")[0].get("aria-invalid") == "true"
    assert doc.xpath("//input[@name='first_name']")[0].get("value") == "Ada"
    assert not Record.objects.filter(module__name="Contacts").exists()


def test_the_create_form_creates_the_record_and_opens_it(client: Client, org: Org):
    client.force_login(org.alice)
    create = reverse("crm:record_create", args=["Contacts"])
    assert _doc(client.get(create)).xpath("//a[text()='Cancel']")[0].get("href") == _list(
        "Contacts"
    )

    response = client.post(
        create, {"first_name": "Ada", "last_name": "Lovelace", "owner": f"u:{org.alice.pk}"}
    )

    record = Record.objects.get(module__name="Contacts")
    assert response["Location"] == _detail(record)
    assert record.label == "Ada Lovelace"
    assert record.owner_user == org.alice


# --- recycle bin -------------------------------------------------------------------------------


def test_deleting_moves_a_record_to_the_recycle_bin_and_restore_brings_it_back(
    client: Client, org: Org
):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    response = client.post(reverse("crm:record_delete", args=["Contacts", record.pk]))
    assert response["Location"] == _list("Contacts")
    assert _row_labels(client.get(_list("Contacts"))) == []
    assert client.get(_detail(record)).status_code == 404

    bin_page = client.get(reverse("crm:recycle_bin"))
    row = _doc(bin_page).xpath("//table//tbody/tr")[0]
    assert record.number in row.text_content()
    assert str(org.alice) in row.text_content()  # deleted by
    buttons = [b.text_content() for b in row.xpath(".//button")]
    assert buttons == ["Restore"]  # no purge for a user who is not an administrator

    client.post(reverse("crm:record_restore", args=[record.pk]))

    assert _row_labels(client.get(_list("Contacts"))) == ["Lovelace"]
    assert "The recycle bin is empty." in _text(client.get(reverse("crm:recycle_bin")))


def test_only_a_superuser_may_purge_a_record_from_the_recycle_bin(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    purge = reverse("crm:record_purge", args=[record.pk])
    client.force_login(org.alice)
    client.post(reverse("crm:record_delete", args=["Contacts", record.pk]))

    assert client.post(purge).status_code == 403
    assert Record.objects.filter(pk=record.pk).exists()

    client.force_login(org.admin)
    row = _doc(client.get(reverse("crm:recycle_bin"))).xpath("//table//tbody/tr")[0]
    assert [b.text_content() for b in row.xpath(".//button")] == ["Restore", "Purge"]
    response = client.post(purge, follow=True)

    assert f"{record.number} purged for good." in _text(response)
    assert not Record.objects.filter(pk=record.pk).exists()


def test_a_user_cannot_restore_a_record_he_may_not_see(client: Client, org: Org):
    _sharing("Contacts", Sharing.PRIVATE)
    record = make_record("Contacts", org.charlie, last_name="Secret")
    client.force_login(org.charlie)
    client.post(reverse("crm:record_delete", args=["Contacts", record.pk]))

    client.force_login(org.alice)
    assert "Secret" not in _text(client.get(reverse("crm:recycle_bin")))
    assert client.post(reverse("crm:record_restore", args=[record.pk])).status_code == 404


# --- tabs and comments -------------------------------------------------------------------------


def test_a_comment_added_shows_in_the_comments_tab(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    response = client.post(
        reverse("crm:comment_add", args=["Contacts", record.pk]),
        {"body": "Called her: send the offer on Monday."},
    )

    assert response["Location"] == f"{_detail(record)}?tab=comments"
    detail = _doc(client.get(response["Location"]))
    assert detail.xpath("//a[@id='tab-comments']")[0].get("aria-current") == "true"
    comments = _doc(client.get(_tab(record, "comments"), **HX))
    comment = comments.xpath("//li[@class='comment']")[0].text_content()
    assert "Called her: send the offer on Monday." in comment
    assert str(org.alice) in comment


def test_an_empty_comment_is_refused_with_a_message(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    response = client.post(
        reverse("crm:comment_add", args=["Contacts", record.pk]), {"body": "  "}, follow=True
    )

    assert "Write a comment first." in _doc(response).xpath("//*[@role='alert']")[0].text
    assert "No comments yet." in _text(client.get(_tab(record, "comments"), **HX))


def test_messages_and_documents_tabs_say_honestly_that_there_is_nothing_yet(
    client: Client, org: Org
):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    assert "No emails are linked to this record yet." in _text(
        client.get(_tab(record, "messages"), **HX)
    )
    assert "No documents yet." in _text(client.get(_tab(record, "documents"), **HX))


def test_each_tab_is_also_a_page_of_its_own_for_browsers_without_javascript(
    client: Client, org: Org
):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    detail = _doc(client.get(_detail(record)))
    links = detail.xpath("//nav[@class='tab-nav']//a")
    assert [a.get("href") for a in links] == [
        _tab(record, t) for t in ("messages", "documents", "comments", "history")
    ]
    assert detail.xpath(CURRENT_TAB)[0].get("id") == "tab-messages"

    page = client.get(_tab(record, "history"))
    fragment = client.get(_tab(record, "history"), **HX)

    assert page.status_code == fragment.status_code == 200
    assert _doc(page).xpath("//main")
    assert _doc(page).xpath("//footer")
    assert _doc(page).xpath(CURRENT_TAB)[0].get("id") == "tab-history"
    assert "Created" in _text(page)
    assert "<html" not in fragment.content.decode()
    assert _doc(fragment).get("id") == "record-tabs"
    assert client.get(_tab(record, "nonsense")).status_code == 404


def test_the_tab_query_parameter_selects_the_first_tab_shown(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)

    doc = _doc(client.get(_detail(record), {"tab": "history"}))

    assert doc.xpath(CURRENT_TAB)[0].get("id") == "tab-history"
    assert doc.xpath("//div[@id='tab-panel']")[0].get("hx-get") == _tab(record, "history")
    bogus = _doc(client.get(_detail(record), {"tab": "bogus"}))
    assert bogus.xpath(CURRENT_TAB)[0].get("id") == "tab-messages"


# --- every page --------------------------------------------------------------------------------


def test_the_footer_shows_the_crm_version(client: Client, org: Org):
    footer = f"CRM Mail Connector · version {CRM_VERSION}"
    assert footer in _text(client.get(reverse("login")))
    client.force_login(org.alice)
    assert footer in _text(client.get(reverse("crm:home")))


def test_an_unknown_address_shows_the_crms_own_not_found_page(client: Client, org: Org):
    client.force_login(org.alice)

    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert "There is no page at this address." in _text(response)
    assert _doc(response).xpath("//nav[@class='sidenav']")


def test_pages_carry_no_inline_script_or_style(client: Client, org: Org):
    record = make_record("Contacts", org.alice, last_name="Lovelace")
    client.force_login(org.alice)
    urls = [
        reverse("crm:home"),
        _list("Contacts"),
        _detail(record),
        _edit(record),
        _tab(record, "comments"),
        reverse("crm:recycle_bin"),
    ]
    for url in urls:
        response = client.get(url)
        doc = _doc(response)
        assert "script-src 'self'" in response["Content-Security-Policy"]
        assert not doc.xpath("//script[not(@src)]"), url
        assert not doc.xpath("//*[@style]"), url
        assert not doc.xpath("//style"), url
        assert not [e for e in doc.iter() if any(a.startswith("hx-on") for a in e.attrib)], url


def test_a_user_without_a_role_sees_no_modules(client: Client, org: Org):
    loner: User = UserFactory(username="loner", role=None)
    client.force_login(loner)

    page = client.get(reverse("crm:home"))

    assert not _doc(page).xpath("//a[@class='module-card']")
    assert "No modules are open to you yet." in _text(page)
