"""Properties of the rule engine that must hold for any email and any value."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailconverter.rules import (
    Condition,
    ConditionField,
    Facts,
    Match,
    Operator,
    Rule,
    evaluate,
    matching_rules,
)

texts = st.text(max_size=40)
people = st.lists(st.tuples(texts, texts), max_size=3).map(tuple)
facts = st.builds(
    Facts,
    sender=st.tuples(texts, texts),
    to=people,
    cc=people,
    subject=texts,
    body=st.text(max_size=200),
    folder=texts,
)
fields = st.sampled_from(list(ConditionField))
NEGATIONS = [
    (Operator.CONTAINS, Operator.NOT_CONTAINS),
    (Operator.EQUALS, Operator.NOT_EQUALS),
    (Operator.MATCHES, Operator.NOT_MATCHES),
]


@given(facts=facts, field=fields, value=texts, pair=st.sampled_from(NEGATIONS))
def test_each_negative_operator_is_the_exact_negation_of_its_positive(
    facts: Facts, field: ConditionField, value: str, pair: tuple[Operator, Operator]
) -> None:
    positive, negative = pair
    assert (
        evaluate(Condition(field, positive, value), facts).matched
        is not evaluate(Condition(field, negative, value), facts).matched
    )


@given(facts=facts, field=fields, value=texts)
def test_case_never_changes_the_answer(facts: Facts, field: ConditionField, value: str) -> None:
    for op in (Operator.CONTAINS, Operator.EQUALS, Operator.BEGINS_WITH, Operator.ENDS_WITH):
        assert (
            evaluate(Condition(field, op, value.upper()), facts).matched
            == evaluate(Condition(field, op, value.lower()), facts).matched
            or value.upper().lower() != value.lower()  # ß, ﬁ… change length when cased
        )


@given(facts=facts, field=fields, value=texts)
def test_equals_and_begins_or_ends_with_imply_contains(
    facts: Facts, field: ConditionField, value: str
) -> None:
    contains = evaluate(Condition(field, Operator.CONTAINS, value), facts).matched
    for op in (Operator.EQUALS, Operator.BEGINS_WITH, Operator.ENDS_WITH):
        if evaluate(Condition(field, op, value), facts).matched:
            assert contains


@given(facts=facts, value=st.text(min_size=1, max_size=20))
def test_a_value_taken_from_the_subject_is_contained_in_it(facts: Facts, value: str) -> None:
    subject = f"x{value}y"
    facts = Facts(subject=subject)
    assert evaluate(Condition(ConditionField.SUBJECT, Operator.CONTAINS, value), facts).matched


@given(facts=facts, conditions=st.lists(st.tuples(fields, texts), min_size=1, max_size=4))
def test_all_implies_any_and_empty_rules_match_everything(
    facts: Facts, conditions: list[tuple[ConditionField, str]]
) -> None:
    built = tuple(Condition(f, Operator.CONTAINS, v) for f, v in conditions)
    all_rule = Rule(conditions=built, match=Match.ALL, key="all")
    any_rule = Rule(conditions=built, match=Match.ANY, key="any")
    keys = [m.rule.key for m in matching_rules([all_rule, any_rule, Rule(key="empty")], facts)]
    if "all" in keys:
        assert "any" in keys
    assert keys[-1] == "empty"
