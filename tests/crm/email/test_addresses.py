from __future__ import annotations

import pytest

from crm.email.addresses import (
    FREE_MAIL_DOMAINS,
    Address,
    domain_of,
    is_automated_sender,
    is_free_mail,
    normalise_domain,
    normalise_email,
    parse_address,
    parse_addresses,
)


def test_an_address_is_lowercased_and_stripped_of_angle_brackets() -> None:
    assert normalise_email("  <John.Doe@Example.COM> ") == "john.doe@example.com"


def test_an_internationalised_domain_becomes_its_idna_a_label() -> None:
    assert normalise_email("Jürgen@Bücher.Example") == "jürgen@xn--bcher-kva.example"


def test_the_root_dot_of_a_domain_is_dropped() -> None:
    assert normalise_domain("Example.COM.") == "example.com"


def test_a_domain_the_idna_codec_rejects_is_kept_lowercased() -> None:
    assert normalise_domain("Bü..Example") == "bü..example"


@pytest.mark.parametrize("value", ["", "root", "@example.com", "john@", "<>"])
def test_a_value_without_local_part_and_domain_is_not_an_address(value: str) -> None:
    assert normalise_email(value) is None


def test_an_address_list_keeps_display_names_and_flattens_groups() -> None:
    found = parse_addresses('"Smith, Bob" <BOB@x.example>, team: carol@y.example, d@z.example;')

    assert found == (
        Address(name="Smith, Bob", email="bob@x.example"),
        Address(name="", email="carol@y.example"),
        Address(name="", email="d@z.example"),
    )


def test_an_rfc2047_display_name_is_decoded() -> None:
    found = parse_address("=?utf-8?Q?J=C3=B6rg_Wei=C3=9F?= <joerg@example.de>")

    assert found == Address(name="Jörg Weiß", email="joerg@example.de")


def test_an_empty_group_gives_no_addresses() -> None:
    assert parse_addresses("undisclosed-recipients:;") == ()


def test_unparseable_text_gives_no_address() -> None:
    assert parse_address("<<<@@@>>>") is None


def test_a_display_form_is_a_mailbox_not_an_address() -> None:
    assert normalise_email("Someone <a@example.org>") is None


def test_the_domain_of_an_address_is_normalised() -> None:
    assert domain_of("Someone <a@Sub.Example.ORG>") == "sub.example.org"
    assert domain_of("a@Sub.Example.ORG") == "sub.example.org"
    assert domain_of(Address(name="", email="a@example.org")) == "example.org"


@pytest.mark.parametrize(
    "domain",
    [
        *("gmail.com", "GMAIL.COM", "outlook.com", "hotmail.co.uk", "hotmail.de", "yahoo.fr"),
        *("icloud.com", "gmx.net", "gmx.de", "web.de", "libero.it", "orange.fr", "mail.ru"),
    ],
)
def test_consumer_mail_providers_are_free_mail(domain: str) -> None:
    assert is_free_mail(domain)


def test_an_address_at_a_free_mail_provider_is_free_mail() -> None:
    assert is_free_mail("Someone@GMail.com")


@pytest.mark.parametrize("domain", ["example.com", "customer.example", "gmail.com.evil.example"])
def test_company_domains_are_not_free_mail(domain: str) -> None:
    assert not is_free_mail(domain)


def test_the_free_mail_list_is_normalised_and_covers_the_big_providers() -> None:
    assert len(FREE_MAIL_DOMAINS) >= 60
    assert all(domain == normalise_domain(domain) for domain in FREE_MAIL_DOMAINS)


@pytest.mark.parametrize(
    "address",
    [
        "MAILER-DAEMON@mx.example.net",
        "postmaster@example.com",
        "no-reply@news.example.com",
        "noreply@github.example",
        "No_Reply@example.com",
        "donotreply@bank.example",
        "do-not-reply@bank.example",
        "do_not_reply@bank.example",
        "noreply+bounces@example.com",
        "notifications-noreply@linkedin.example",
        "noreply-billing@example.com",
    ],
)
def test_bounce_and_no_reply_senders_are_automated(address: str) -> None:
    assert is_automated_sender(address)


@pytest.mark.parametrize(
    "address", ["alice@example.com", "reply@example.com", "post@example.com", "daemon@x.example"]
)
def test_people_are_not_automated_senders(address: str) -> None:
    assert not is_automated_sender(address)


def test_a_display_form_sender_can_be_checked_for_automation() -> None:
    assert is_automated_sender("Mail Delivery System <MAILER-DAEMON@mx.example.net>")


def test_an_address_object_can_be_checked_for_automation() -> None:
    assert is_automated_sender(
        Address(name="Mail Delivery System", email="mailer-daemon@x.example")
    )
