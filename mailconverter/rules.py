"""Which rules apply to an email: conditions, all/any, regex captures. Pure code.

ARCHITECTURE.md, "Mail converter", Rule and Condition. No models, no settings: the scanner
turns rows into `Rule` values (`rule_from_dict`) and an email into `Facts`; this module says
which rules match, in order, and what each hands to its actions (the last regex capture, or the
ticket number found). Running the actions, and falling through to the next rule when the first
action fails, is the scanner's job.

Semantics an administrator can rely on:
- Comparisons ignore case (`str.casefold`), and surrounding whitespace in the value.
- "from" tests the sender's address and display name; "to"/"cc" are true when any recipient
  (address or name) satisfies the operator.
- Each negative operator is the exact negation of its positive one over the whole field:
  "to does not contain x" means no recipient contains x.
- A rule without conditions matches every message ("every message").
- A regex is searched, not anchored; its last capture group (or the whole match when it has no
  group) is handed on. An invalid regex is refused when the rule is saved (`validate`); a rule
  that somehow holds one never matches on that condition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

__all__ = [
    "Condition",
    "ConditionField",
    "Facts",
    "Match",
    "Operator",
    "Rule",
    "RuleMatch",
    "describe",
    "evaluate",
    "find_ticket_number",
    "match_rule",
    "matching_rules",
    "rule_from_dict",
    "validate",
]

# Regexes run on bounded text: Python's `re` has no timeout, so a pathological pattern on a
# huge body could hang a worker. A subject is never near this; a body is cut.
MAX_MATCH_CHARS = 100_000
DEFAULT_TICKET_PREFIX = "TT"


class ConditionField(StrEnum):
    FROM = "from"
    TO = "to"
    CC = "cc"
    SUBJECT = "subject"
    BODY = "body"
    FOLDER = "folder"


class Operator(StrEnum):
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    BEGINS_WITH = "begins_with"
    ENDS_WITH = "ends_with"
    MATCHES = "matches"
    NOT_MATCHES = "not_matches"
    HAS_TICKET_NUMBER = "has_ticket_number"


class Match(StrEnum):
    ALL = "all"
    ANY = "any"


OPERATOR_LABELS: dict[Operator, str] = {
    Operator.CONTAINS: "contains",
    Operator.NOT_CONTAINS: "does not contain",
    Operator.EQUALS: "equals",
    Operator.NOT_EQUALS: "does not equal",
    Operator.BEGINS_WITH: "begins with",
    Operator.ENDS_WITH: "ends with",
    Operator.MATCHES: "matches regex",
    Operator.NOT_MATCHES: "does not match regex",
    Operator.HAS_TICKET_NUMBER: "has ticket number",
}
_NEGATIONS = {
    Operator.NOT_CONTAINS: Operator.CONTAINS,
    Operator.NOT_EQUALS: Operator.EQUALS,
    Operator.NOT_MATCHES: Operator.MATCHES,
}


@dataclass(frozen=True, slots=True)
class Condition:
    field: ConditionField
    operator: Operator
    value: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    conditions: tuple[Condition, ...] = ()
    match: Match = Match.ALL
    actions: tuple[Mapping[str, Any], ...] = ()
    stop_after_match: bool = True
    key: Any = None  # the caller's id for the rule (its row's pk)
    name: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    """What conditions look at. Addresses are (name, address) pairs."""

    sender: tuple[str, str] = ("", "")
    to: tuple[tuple[str, str], ...] = ()
    cc: tuple[tuple[str, str], ...] = ()
    subject: str = ""
    body: str = ""
    folder: str = ""
    ticket_prefix: str = DEFAULT_TICKET_PREFIX


@dataclass(frozen=True, slots=True)
class Evaluation:
    matched: bool
    capture: str | None = None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: Rule
    capture: str | None = None  # the last capture among the rule's matching conditions
    captures: tuple[str, ...] = field(default=())


# --- Building rules from stored data ------------------------------------------------------------


def rule_from_dict(data: Mapping[str, Any]) -> Rule:
    """A Rule from stored JSON; raises ValueError naming what is wrong."""
    conditions = tuple(
        Condition(
            field=ConditionField(c["field"]),
            operator=Operator(c["operator"]),
            value=str(c.get("value", "")),
        )
        for c in data.get("conditions") or ()
    )
    actions = tuple(dict(a) for a in data.get("actions") or ())
    return Rule(
        conditions=conditions,
        match=Match(data.get("match", Match.ALL)),
        actions=actions,
        stop_after_match=bool(data.get("stop_after_match", True)),
        key=data.get("key"),
        name=str(data.get("name", "")),
    )


def validate(conditions: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """Problems per condition index, in words, for the rule form (empty when all is well)."""
    problems: dict[int, str] = {}
    for index, c in enumerate(conditions):
        try:
            condition = Condition(
                ConditionField(str(c.get("field"))),
                Operator(str(c.get("operator"))),
                str(c.get("value", "")),
            )
        except ValueError:
            problems[index] = "Choose a field and an operator."
            continue
        if condition.operator in (Operator.MATCHES, Operator.NOT_MATCHES):
            try:
                re.compile(condition.value)
            except re.error as exc:
                problems[index] = f"This is not a valid regular expression: {exc}."
        elif condition.operator in _NEEDS_VALUE and not condition.value.strip():
            problems[index] = "Enter a value to compare with."
    return problems


_NEEDS_VALUE = {
    Operator.CONTAINS,
    Operator.NOT_CONTAINS,
    Operator.BEGINS_WITH,
    Operator.ENDS_WITH,
}


def describe(rule: Rule) -> str:
    """ "every message", or the conditions in words."""
    if not rule.conditions:
        return "every message"
    joiner = " and " if rule.match == Match.ALL else " or "
    return joiner.join(
        f"{c.field.value} {OPERATOR_LABELS[c.operator]}"
        + (f" “{c.value}”" if c.operator != Operator.HAS_TICKET_NUMBER or c.value else "")
        for c in rule.conditions
    )


# --- Matching ----------------------------------------------------------------------------------


def matching_rules(rules: Sequence[Rule], facts: Facts) -> Iterator[RuleMatch]:
    """The rules that match, in order. The caller runs their actions and decides when to stop."""
    for rule in rules:
        found = match_rule(rule, facts)
        if found is not None:
            yield found


def match_rule(rule: Rule, facts: Facts) -> RuleMatch | None:
    if not rule.conditions:
        return RuleMatch(rule=rule)
    outcomes = [evaluate(c, facts) for c in rule.conditions]
    ok = (
        all(o.matched for o in outcomes)
        if rule.match == Match.ALL
        else any(o.matched for o in outcomes)
    )
    if not ok:
        return None
    captures = tuple(o.capture for o in outcomes if o.matched and o.capture is not None)
    return RuleMatch(rule=rule, capture=captures[-1] if captures else None, captures=captures)


def evaluate(condition: Condition, facts: Facts) -> Evaluation:
    positive = _NEGATIONS.get(condition.operator)
    if positive is not None:
        found = evaluate(Condition(condition.field, positive, condition.value), facts)
        return Evaluation(matched=not found.matched)
    values = _values(condition.field, facts)
    op = condition.operator
    if op == Operator.HAS_TICKET_NUMBER:
        prefix = condition.value.strip() or facts.ticket_prefix
        for text in values:
            number = find_ticket_number(text, prefix)
            if number:
                return Evaluation(True, number)
        return Evaluation(False)
    if op == Operator.MATCHES:
        pattern = _compiled(condition.value)
        if pattern is None:
            return Evaluation(False)
        for text in values:
            m = pattern.search(text[:MAX_MATCH_CHARS])
            if m:
                return Evaluation(True, _last_capture(m))
        return Evaluation(False)
    wanted = condition.value.strip().casefold()
    for text in values:
        text = text.casefold()
        if (
            (op == Operator.CONTAINS and wanted in text)
            or (op == Operator.EQUALS and text.strip() == wanted)
            or (op == Operator.BEGINS_WITH and text.lstrip().startswith(wanted))
            or (op == Operator.ENDS_WITH and text.rstrip().endswith(wanted))
        ):
            return Evaluation(True)
    return Evaluation(False)


def find_ticket_number(text: str, prefix: str = DEFAULT_TICKET_PREFIX) -> str | None:
    """`"Re: Printer - Ticket Id: TT1042"`, `"[tt1042]"`, `"Ticket Id: 1042"` → `"TT1042"`."""
    prefix = prefix.strip().upper()
    if not prefix:
        return None
    m = _ticket_pattern(prefix).search(text[:MAX_MATCH_CHARS])
    if not m:
        return None
    return f"{prefix}{int(m.group('number'))}"


# --- helpers -----------------------------------------------------------------------------------


def _values(which: ConditionField, facts: Facts) -> list[str]:
    if which == ConditionField.FROM:
        name, address = facts.sender
        return [v for v in (address, name, _formatted(name, address)) if v]
    if which in (ConditionField.TO, ConditionField.CC):
        people = facts.to if which == ConditionField.TO else facts.cc
        values: list[str] = []
        for name, address in people:
            values.extend(v for v in (address, name, _formatted(name, address)) if v)
        return values
    if which == ConditionField.SUBJECT:
        return [facts.subject]
    if which == ConditionField.BODY:
        return [facts.body[:MAX_MATCH_CHARS]]
    return [facts.folder]


def _formatted(name: str, address: str) -> str:
    return f"{name} <{address}>" if name and address else ""


def _last_capture(m: re.Match[str]) -> str:
    groups = [g for g in m.groups() if g is not None]
    return groups[-1] if groups else m.group(0)


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        return None


@lru_cache(maxsize=32)
def _ticket_pattern(prefix: str) -> re.Pattern[str]:
    escaped = re.escape(prefix)
    # "TT1042" standing alone, or after "Ticket Id:" with or without the prefix (the subject of
    # the CRM's own answers: "Re: <title> - Ticket Id: TT1042").
    return re.compile(
        rf"(?:\bticket[ ]?id:?\s*(?:{escaped})?|(?<![A-Za-z0-9]){escaped})(?P<number>\d{{1,9}})\b",
        re.IGNORECASE,
    )
