"""The rule engine: every field and operator, all/any, order, captures. No database."""

from __future__ import annotations

import pytest

from mailconverter.rules import (
    Condition,
    ConditionField,
    Facts,
    Match,
    Operator,
    Rule,
    describe,
    evaluate,
    find_ticket_number,
    matching_rules,
    rule_from_dict,
    validate,
)

F = ConditionField
O = Operator  # noqa: E741

FACTS = Facts(
    sender=("Anna Rossi", "anna.rossi@acme.example"),
    to=(("Support", "support@crm.example"), ("", "sales@crm.example")),
    cc=(("Bob Manager", "bob@acme.example"),),
    subject="Re: Printer on fire - Ticket Id: TT1042",
    body="Hello,\nthe printer is still burning.\nOrder number: 55-ABC\n",
    folder="INBOX/CRM/Leads",
)


def holds(field: ConditionField, op: Operator, value: str = "", facts: Facts = FACTS) -> bool:
    return evaluate(Condition(field, op, value), facts).matched


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        # from: address and display name, case ignored
        (F.FROM, O.CONTAINS, "ACME.example", True),
        (F.FROM, O.CONTAINS, "rossi", True),
        (F.FROM, O.CONTAINS, "globex", False),
        (F.FROM, O.NOT_CONTAINS, "globex", True),
        (F.FROM, O.NOT_CONTAINS, "anna", False),
        (F.FROM, O.EQUALS, "Anna.Rossi@ACME.example", True),
        (F.FROM, O.EQUALS, "anna rossi", True),
        (F.FROM, O.EQUALS, "anna", False),
        (F.FROM, O.NOT_EQUALS, "someone@else.example", True),
        (F.FROM, O.NOT_EQUALS, "anna.rossi@acme.example", False),
        (F.FROM, O.BEGINS_WITH, "anna.", True),
        (F.FROM, O.BEGINS_WITH, "rossi", False),
        (F.FROM, O.ENDS_WITH, "@acme.example", True),
        (F.FROM, O.ENDS_WITH, "@acme", False),
        (F.FROM, O.MATCHES, r"^anna\.\w+@", True),
        (F.FROM, O.NOT_MATCHES, r"@globex\.", True),
        # to / cc: any recipient
        (F.TO, O.CONTAINS, "sales@", True),
        (F.TO, O.EQUALS, "support", True),
        (F.TO, O.NOT_CONTAINS, "sales@", False),
        (F.TO, O.ENDS_WITH, "crm.example", True),
        (F.TO, O.BEGINS_WITH, "bob", False),
        (F.CC, O.BEGINS_WITH, "bob", True),
        (F.CC, O.EQUALS, "bob manager", True),
        (F.CC, O.NOT_EQUALS, "bob@acme.example", False),
        (F.CC, O.MATCHES, r"manager$", True),
        # subject
        (F.SUBJECT, O.CONTAINS, "printer ON FIRE", True),
        (F.SUBJECT, O.BEGINS_WITH, "re:", True),
        (F.SUBJECT, O.ENDS_WITH, "tt1042", True),
        (F.SUBJECT, O.EQUALS, "re: printer on fire - ticket id: tt1042", True),
        (F.SUBJECT, O.NOT_EQUALS, "Printer on fire", True),
        (F.SUBJECT, O.HAS_TICKET_NUMBER, "", True),
        (F.SUBJECT, O.NOT_MATCHES, r"invoice", True),
        # body: the text body
        (F.BODY, O.CONTAINS, "still burning", True),
        (F.BODY, O.BEGINS_WITH, "hello", True),
        (F.BODY, O.MATCHES, r"order number:\s*(\S+)", True),
        (F.BODY, O.HAS_TICKET_NUMBER, "", False),
        # folder: where the message was found
        (F.FOLDER, O.EQUALS, "inbox/crm/leads", True),
        (F.FOLDER, O.ENDS_WITH, "/Leads", True),
        (F.FOLDER, O.CONTAINS, "Tickets", False),
    ],
)
def test_every_field_and_operator_compares_without_case(
    field: ConditionField, op: Operator, value: str, expected: bool
) -> None:
    assert holds(field, op, value) is expected


def test_a_regex_hands_its_last_capture_group_to_the_action() -> None:
    found = evaluate(Condition(F.BODY, O.MATCHES, r"(order) number:\s*(\S+)"), FACTS)
    assert found.capture == "55-ABC"


def test_a_regex_without_groups_hands_on_the_whole_match() -> None:
    assert evaluate(Condition(F.SUBJECT, O.MATCHES, r"tt\d+"), FACTS).capture == "TT1042"


def test_has_ticket_number_hands_on_the_number() -> None:
    assert evaluate(Condition(F.SUBJECT, O.HAS_TICKET_NUMBER), FACTS).capture == "TT1042"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[TT1042] printer", "TT1042"),
        ("Re: printer (tt77)", "TT77"),
        ("Re: Printer - Ticket Id: TT1042", "TT1042"),
        ("Ticket Id: 1042", "TT1042"),
        ("ticket id 0099", "TT99"),
        ("ATT1042 is a phone company", None),
        ("TT1042x", None),
        ("no number here", None),
        ("TT", None),
    ],
)
def test_ticket_numbers_are_found_in_the_forms_people_and_the_crm_write(
    text: str, expected: str | None
) -> None:
    assert find_ticket_number(text) == expected


def test_has_ticket_number_takes_another_prefix_from_the_condition() -> None:
    facts = Facts(subject="Re: [CASE12] help")
    assert evaluate(Condition(F.SUBJECT, O.HAS_TICKET_NUMBER, "CASE"), facts).capture == "CASE12"
    assert not holds(F.SUBJECT, O.HAS_TICKET_NUMBER, "", facts)


def test_an_invalid_regex_never_matches_and_is_refused_when_saved() -> None:
    assert not holds(F.SUBJECT, O.MATCHES, "([unclosed")
    problems = validate([{"field": "subject", "operator": "matches", "value": "([unclosed"}])
    assert "not a valid regular expression" in problems[0]


def test_validate_names_missing_values_and_unknown_operators() -> None:
    problems = validate(
        [
            {"field": "subject", "operator": "contains", "value": "  "},
            {"field": "subject", "operator": "sounds_like", "value": "x"},
            {"field": "subject", "operator": "has_ticket_number"},
        ]
    )
    assert set(problems) == {0, 1}


def rule(*conditions: Condition, match: Match = Match.ALL, key: str = "r", stop: bool = True):
    return Rule(conditions=conditions, match=match, key=key, stop_after_match=stop)


def test_all_needs_every_condition_and_any_needs_one() -> None:
    yes = Condition(F.SUBJECT, O.CONTAINS, "printer")
    no = Condition(F.SUBJECT, O.CONTAINS, "invoice")
    assert [m.rule.key for m in matching_rules([rule(yes, no)], FACTS)] == []
    assert [m.rule.key for m in matching_rules([rule(yes, no, match=Match.ANY)], FACTS)] == ["r"]
    assert [m.rule.key for m in matching_rules([rule(no, no, match=Match.ANY)], FACTS)] == []


def test_a_rule_without_conditions_matches_every_message_and_says_so() -> None:
    empty = rule()
    assert [m.rule.key for m in matching_rules([empty], Facts())] == ["r"]
    assert describe(empty) == "every message"


def test_matching_rules_keep_the_administrators_order() -> None:
    rules = [
        rule(Condition(F.SUBJECT, O.CONTAINS, "printer"), key="first"),
        rule(Condition(F.SUBJECT, O.CONTAINS, "nothing"), key="skipped"),
        rule(key="catch-all"),
    ]
    assert [m.rule.key for m in matching_rules(rules, FACTS)] == ["first", "catch-all"]


def test_under_any_the_capture_comes_from_a_condition_that_matched() -> None:
    found = list(
        matching_rules(
            [
                rule(
                    Condition(F.SUBJECT, O.MATCHES, r"(invoice) (\d+)"),
                    Condition(F.SUBJECT, O.HAS_TICKET_NUMBER),
                    match=Match.ANY,
                )
            ],
            FACTS,
        )
    )
    assert found[0].capture == "TT1042"


def test_rules_load_from_their_stored_form_and_refuse_unknown_operators() -> None:
    loaded = rule_from_dict(
        {
            "match": "any",
            "conditions": [{"field": "from", "operator": "ends_with", "value": "@acme.example"}],
            "actions": [{"type": "create_ticket"}],
            "stop_after_match": False,
        }
    )
    assert loaded.match == Match.ANY
    assert not loaded.stop_after_match
    assert describe(loaded) == "from ends with “@acme.example”"
    with pytest.raises(ValueError, match="sounds_like"):
        rule_from_dict({"conditions": [{"field": "from", "operator": "sounds_like"}]})
